"""The house rules the layers contract (lint-imports) does not state; `nox -s lint` runs this.

- no import circle among moltbuild's modules, function-level and TYPE_CHECKING imports included;
- no function longer than 60 lines in src/, no module longer than 400;
- at most 30 blocks ranked C by radon (xenon refuses D and worse): complexity stays where it is rare;
- at most 12 modules at the package's top (the vocabulary); everything else lives in a room.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import grimp

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 60
MAX_MODULE_LINES = 400
MAX_TOP = 12
MAX_C_BLOCKS = 30


def circles() -> list[str]:
    graph = grimp.build_graph("moltbuild")
    found = set()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            chain = graph.find_shortest_chain(importer=imported, imported=module)
            if chain:
                cycle = (module, *chain)
                start = cycle.index(min(cycle[:-1]))
                found.add(" -> ".join(cycle[start:-1] + cycle[:start] + (cycle[start],)))
    return sorted(found)


def long_functions() -> list[str]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_LINES:
                    out.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} has {length} lines")
    return out


def long_modules() -> list[str]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES:
            out.append(f"{path.relative_to(SRC)} has {lines} lines (at most {MAX_MODULE_LINES}): split it")
    return out


def c_blocks() -> list[str]:
    from radon.complexity import cc_rank, cc_visit

    ranked = [
        f"{path.relative_to(SRC)}:{block.lineno} {block.name}"
        for path in sorted(SRC.rglob("*.py"))
        for block in cc_visit(path.read_text())
        if cc_rank(block.complexity) == "C"
    ]
    return [f"{len(ranked)} blocks ranked C (at most {MAX_C_BLOCKS}): {', '.join(ranked)}"] * (
        len(ranked) > MAX_C_BLOCKS
    )


def crowded_top() -> list[str]:
    top = sorted(p.name for p in (SRC / "moltbuild").glob("*.py"))
    return [f"{len(top)} modules at the top of moltbuild (at most {MAX_TOP}): {', '.join(top)}"] * (
        len(top) > MAX_TOP
    )


def main() -> int:
    sys.path.insert(0, str(SRC))
    problems = [f"import circle: {c}" for c in circles()] + long_functions() + long_modules()
    problems += c_blocks() + crowded_top()
    for problem in problems:
        print(problem)
    print(f"house rules: {'broken' if problems else 'kept'} ({len(problems)} problem(s))")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
