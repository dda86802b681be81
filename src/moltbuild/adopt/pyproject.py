"""The `[tool.moltbuild]` table in pyproject.toml, written with tomlkit: a new table is appended
to the parsed document, so every byte already there (comments, key order, other tables) stays as
it was. A file that already has the table is never changed: init says what it would add."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import AoT, InlineTable, Table

from moltbuild.adopt.matching import Choice
from moltbuild.adopt.survey import Survey
from moltbuild.errors import ConfigError
from moltbuild.files import read_text
from moltbuild.project import DEFAULT_REGISTRY, load_images

HEADER = (
    "Written by `moltbuild init` from the Dockerfiles and the kustomization it found. Build args,",
    "platforms, target and smoke checks are not guessed: add them per image.",
)


@dataclass(frozen=True)
class Change:
    path: Path
    old: str | None  # None: a new file
    new: str
    what: str


def _nested(*keys: str, leaf: Table) -> tomlkit.TOMLDocument:
    """A document holding `leaf` under keys[0].keys[1]...: one [a.b.c] header, no empty [a]."""
    for key in reversed(keys[1:]):
        outer = tomlkit.table(is_super_table=True)
        outer.append(key, leaf)
        leaf = outer
    doc = tomlkit.document()
    doc.append(keys[0], leaf)
    return doc


def image_table(choice: Choice) -> Table:
    table = tomlkit.table()
    table.append("repository", choice.repository)
    table.append("context", choice.recipe.context)
    table.append("dockerfile", choice.recipe.dockerfile)
    if choice.recipe.target:
        table.append("target", choice.recipe.target)
    if choice.recipe.build_args:
        args = tomlkit.inline_table()
        args.update(dict(choice.recipe.build_args))
        table.append("build_args", args)
    return table


def image_block(choice: Choice) -> str:
    """[tool.moltbuild.images.NAME] and its keys, as TOML text."""
    return tomlkit.dumps(_nested("tool", "moltbuild", "images", choice.name, leaf=image_table(choice)))


def moltbuild_table(survey: Survey) -> Table:
    """[tool.moltbuild]: what init decided, and a comment on what it left out."""
    table = tomlkit.table()
    for line in HEADER:
        table.append(None, tomlkit.comment(line))
    if survey.registry:
        table.append("registry", survey.registry)
    else:
        unset = f'registry = "HOST/NAMESPACE"  # none found; unset, moltbuild uses {DEFAULT_REGISTRY}'
        table.append(None, tomlkit.comment(unset))
    images = tomlkit.table(is_super_table=True)
    for choice in survey.choices:
        images.append(choice.name, image_table(choice))
    table.append("images", images)
    return table


def _parse(path: Path, text: str) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(text)
    except TOMLKitError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc}); fix the syntax, then run init again") from None


def _existing_table(data: dict[str, Any]) -> dict[str, Any] | None:
    tool = data.get("tool")
    table = tool.get("moltbuild") if isinstance(tool, dict) else None
    return table if isinstance(table, dict) else None


def _declared(root: Path, table: dict[str, Any]) -> set[Path]:
    """The Dockerfiles the table's images name."""
    images = [raw for raw in (table.get("images") or {}).values() if isinstance(raw, dict)]
    return {
        (root / str(raw.get("context", ".")) / str(raw.get("dockerfile", "Dockerfile"))).resolve()
        for raw in images
    }


def _would_add(survey: Survey, table: dict[str, Any]) -> list[str]:
    """With a [tool.moltbuild] already there: what init would add, a line each; nothing changes."""
    declared = _declared(survey.root, table)
    blocks = [
        image_block(c) for c in survey.choices if (survey.root / c.recipe.path).resolve() not in declared
    ]
    if survey.registry and not table.get("registry"):
        blocks.insert(0, f"registry = {tomlkit.string(survey.registry).as_string()}  # in [tool.moltbuild]")
    if not blocks:
        return ["pyproject.toml: [tool.moltbuild] already declares every Dockerfile found; unchanged"]
    lines = ["pyproject.toml already has [tool.moltbuild]; init changes nothing there. It would add:"]
    return lines + [f"    {line}" for block in blocks for line in block.splitlines()]


def line_ending(text: str) -> str:
    """The file's own line ending (its first line's): what init's added lines are written with."""
    return "\r\n" if text.partition("\n")[0].endswith("\r") else "\n"


def _gap(old: str, nl: str) -> str:
    """What goes between `old` and a new table: a blank line."""
    if not old or old.endswith(nl + nl):
        return ""
    return nl if old.endswith("\n") else nl + nl


def _tool_fix(doc: tomlkit.TOMLDocument) -> str:
    """How to make room for [tool.moltbuild] beside the `tool` this file already has."""
    tool = doc.get("tool")
    kinds = ((InlineTable, "an inline table"), (AoT, "an array of tables ([[tool]])"), (Table, ""))
    kind = next((name for cls, name in kinds if isinstance(tool, cls)), "not a table")
    if tool is None or not kind:
        return "add [tool.moltbuild] and its [tool.moltbuild.images.NAME] tables by hand"
    return f"`tool` here is {kind}, which a [tool.moltbuild] header cannot extend: make it [tool.NAME] tables"


def _not_loading(path: Path, why: str, fix: str) -> ConfigError:
    return ConfigError(
        f"{path}: the [tool.moltbuild] table init planned does not load beside this file ({why}); "
        f"{path.name} itself is fine and unchanged: {fix}, then run init again"
    )


def with_table(path: Path, old: str, survey: Survey) -> str:
    """`old` (kept byte for byte), a blank line, then [tool.moltbuild] in the file's own line
    ending; checked to load as moltbuild reads it. Failing that, the planned table is at fault."""
    nl = line_ending(old)
    head = old + _gap(old, nl)
    doc = _parse(path, head)  # only whitespace added: the parse keeps every byte
    fix = _tool_fix(doc)
    try:
        doc.append("tool", _nested("tool", "moltbuild", leaf=moltbuild_table(survey))["tool"])
        new = tomlkit.dumps(doc)
        if not new.startswith(head):
            raise ValueError("tomlkit changed the bytes already there")
        new = head + new[len(head) :].replace("\n", nl)
        table = _existing_table(tomllib.loads(new))
    except (TOMLKitError, tomllib.TOMLDecodeError, ValueError) as exc:
        raise _not_loading(path, str(exc), fix) from None
    try:
        load_images(survey.root, table)  # what it writes must load
    except ConfigError as exc:
        raise _not_loading(path, exc.message, "add the table by hand and report this init bug") from None
    return new


def plan_pyproject(survey: Survey) -> tuple[Change | None, list[str]]:
    path = survey.root / "pyproject.toml"
    old = read_text(path, "pyproject.toml", keep_newlines=True) if path.is_file() else None
    table = _existing_table(_parse(path, old).unwrap()) if old is not None else None
    if table is not None:
        return None, _would_add(survey, table)
    if not survey.choices:
        raise ConfigError(
            "init could decide no image (see the undecided lines); add [tool.moltbuild.images.NAME] "
            f"to {path} by hand"
        )
    names = ", ".join(c.name for c in survey.choices)
    what = f"{'added' if old is not None else 'created with'} [tool.moltbuild] (images {names})"
    return Change(path, old, with_table(path, old or "", survey), what), []
