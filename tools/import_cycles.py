"""Fail when moltbuild's modules import each other in a circle (function-level imports included)."""

import sys

import grimp


def main() -> int:
    graph = grimp.build_graph("moltbuild")
    modules = sorted(graph.modules)
    cycles = set()
    for module in modules:
        for imported in graph.find_modules_directly_imported_by(module):
            path = graph.find_shortest_chain(importer=imported, imported=module)
            if path:
                cycle = (module, *path)
                start = cycle.index(min(cycle[:-1]))
                cycles.add(cycle[start:-1] + cycle[:start] + (cycle[start],))
    for cycle in sorted(cycles):
        print(" -> ".join(cycle))
    print(f"{len(modules)} modules, {len(cycles)} import circle(s)")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
