"""The kustomization's `images` rewritten as text, in place: only the values that change are
written; every other byte (a leading `---`, comments, quoting, indentation, blank lines, line
endings) stays as it was. The positions come from the YAML parser's nodes, not from a re-dump,
which would drop the document marker and re-indent what it did not touch."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from moltbuild.errors import ConfigError

KEYS = ("newName", "newTag", "digest")
# Plain scalars YAML 1.1 or 1.2 would read as something else than a string: 0012345, 1234e56, 1_000,
# 0x1f, true, on, null, ... A tag like that must be written quoted to come back unchanged.
NOT_A_STRING = re.compile(
    r"[-+]?[0-9][0-9_]*(\.[0-9_]*)?([eE][-+]?[0-9]+)?|[-+]?\.[0-9]+([eE][-+]?[0-9]+)?|0[xXoObB][0-9a-fA-F_]+|"
    r"[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)|[0-9]+(:[0-5]?[0-9])+(\.[0-9]*)?|"
    r"(?i:y|yes|n|no|true|false|on|off|null|~)|"
)
_PLAIN = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./:@+-]*(?<!:)")  # names, tags, digests


def scalar(value: str, *, flow: bool = False) -> str:
    """`value` as YAML text that reads back as the same string, in block or (`flow`) flow context,
    where the parser takes no `:` in a plain scalar (a digest)."""
    if _PLAIN.fullmatch(value) and not NOT_A_STRING.fullmatch(value) and not (flow and ":" in value):
        return value
    return json.dumps(value)  # a JSON string is a valid YAML double-quoted scalar


@dataclass(frozen=True, order=True)
class _Edit:
    start: int
    seq: int  # insertions at the same place keep the order they were made in
    end: int
    text: str


class _Editor:
    def __init__(self, text: str, where: str):
        self.text, self.where = text, where
        self.nl = "\r\n" if "\r\n" in text else "\n"
        self.edits: list[_Edit] = []

    def put(self, start: int, end: int, text: str) -> None:
        self.edits.append(_Edit(start, len(self.edits), end, text))

    def insert_lines(self, at: int, lines: list[str]) -> None:
        lead = self.nl if at == len(self.text) and self.text and not self.text.endswith("\n") else ""
        self.put(at, at, lead + "".join(line + self.nl for line in lines))

    def result(self) -> str:
        out, done = [], 0
        for edit in sorted(self.edits):
            if edit.start < done:
                raise ConfigError(f"{self.where}: overlapping edits in `images`; pin the images by hand")
            out += [self.text[done : edit.start], edit.text]
            done = edit.end
        return "".join([*out, self.text[done:]])

    def line_end(self, index: int) -> int:
        """The index just past the line holding `index` (past its comment and newline)."""
        found = self.text.find("\n", index)
        return len(self.text) if found < 0 else found + 1

    def after_colon(self, key: Node) -> int:
        return self.text.index(":", key.end_mark.index) + 1

    def pair_end(self, key: Node, value: Node) -> int:
        """Where a key's value ends. An empty value's marks point at the next token: use the key's."""
        if isinstance(value, ScalarNode) and value.start_mark.index == value.end_mark.index:
            return self.after_colon(key)
        return self.end_of(value)

    def end_of(self, node: Node) -> int:
        if isinstance(node, MappingNode) and not node.flow_style and node.value:
            return self.pair_end(*node.value[-1])
        if isinstance(node, SequenceNode) and not node.flow_style and node.value:
            return self.end_of(node.value[-1])
        return node.end_mark.index

    def dash_column(self, item: Node) -> int:
        """The column of the `-` that opens a block sequence's item."""
        line_start = self.text.rfind("\n", 0, item.start_mark.index) + 1
        dash = self.text.rfind("-", line_start, item.start_mark.index)
        return dash - line_start if dash >= 0 else item.start_mark.column


def _walk(node: Node) -> Iterator[Node]:
    yield node
    if isinstance(node, MappingNode):
        for key, value in node.value:
            yield from _walk(key)
            yield from _walk(value)
    elif isinstance(node, SequenceNode):
        for item in node.value:
            yield from _walk(item)


def _check_editable(node: Node, where: str) -> None:
    for each in _walk(node):
        if getattr(each, "anchor", None):
            raise ConfigError(
                f"{where}: `images` uses an anchor or alias (&/*); write its values out in full"
            )
        if isinstance(each, ScalarNode) and each.style in ("|", ">"):
            raise ConfigError(
                f"{where}: `images` holds a block scalar (| or >); write each value on one line"
            )


def _find(mapping: MappingNode, name: str) -> tuple[Node, Node] | None:
    return next(((k, v) for k, v in mapping.value if isinstance(k, ScalarNode) and k.value == name), None)


def _flow_entry(entry: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {scalar(str(v), flow=True)}" for k, v in entry.items()) + "}"


def _block_entry(entry: Mapping[str, Any], dash: int, keys: int) -> list[str]:
    first, *rest = [f"{k}: {scalar(str(v))}" for k, v in entry.items()]
    gap = " " * max(keys - dash - 1, 1)
    return [f"{' ' * dash}-{gap}{first}", *(f"{' ' * keys}{line}" for line in rest)]


def _state(entry: Mapping[str, Any], key: str) -> str | None:
    return str(entry[key]) if key in entry and entry[key] is not None else None


def _same(was: Mapping[str, Any], now: Mapping[str, Any], key: str) -> bool:
    if (key in was) != (key in now):
        return False
    if key not in was:
        return True
    return (was[key] is None) == (now[key] is None) and str(was[key]) == str(now[key])


def _delete(ed: _Editor, entry: MappingNode, index: int) -> None:
    key, value = entry.value[index]
    following = entry.value[index + 1][0].start_mark.index if index + 1 < len(entry.value) else None
    if entry.flow_style:
        if index:  # `, key: value` after the previous pair
            ed.put(ed.pair_end(*entry.value[index - 1]), ed.pair_end(key, value), "")
        elif following is not None:
            ed.put(key.start_mark.index, following, "")
        return
    line_start = ed.text.rfind("\n", 0, key.start_mark.index) + 1
    if not ed.text[line_start : key.start_mark.index].strip():  # the key has its own line(s)
        ed.put(line_start, ed.line_end(ed.pair_end(key, value)), "")
    elif following is not None:  # `- key: value` opens the entry: the next key moves up
        ed.put(key.start_mark.index, following, "")
    else:
        raise ConfigError(
            f"{ed.where}: cannot remove {key.value} from a one-key `images` entry; edit it by hand"
        )


def _replace(ed: _Editor, key: Node, value: Node, text: str) -> None:
    if not isinstance(value, ScalarNode):
        raise ConfigError(
            f"{ed.where}: `images` entry's {key.value} must be one value, not a list or mapping"
        )
    if value.start_mark.index == value.end_mark.index:  # `key:` with nothing after it
        ed.put(ed.after_colon(key), ed.after_colon(key), " " + text)
    else:
        ed.put(value.start_mark.index, value.end_mark.index, text)


def _update_entry(ed: _Editor, entry: MappingNode, was: Mapping[str, Any], now: Mapping[str, Any]) -> None:
    added = {}
    for key in (k for k in KEYS if not _same(was, now, k)):
        found = next((i for i, (k, _) in enumerate(entry.value) if getattr(k, "value", None) == key), None)
        if key not in now and found is not None:
            _delete(ed, entry, found)
        elif found is None:
            added[key] = now[key]
        else:
            text = scalar(str(now[key]), flow=entry.flow_style)
            _replace(ed, entry.value[found][0], entry.value[found][1], text)
    if added:
        _add_keys(ed, entry, added)


def _add_keys(ed: _Editor, entry: MappingNode, added: Mapping[str, Any]) -> None:
    """`added` after the entry's last key, in the entry's style."""
    last_key, last_value = entry.value[-1]
    if entry.flow_style:
        ed.put(
            ed.pair_end(last_key, last_value),
            ed.pair_end(last_key, last_value),
            ", " + _flow_entry(added)[1:-1],
        )
        return
    indent = " " * last_key.start_mark.column
    lines = [f"{indent}{k}: {scalar(str(v))}" for k, v in added.items()]
    ed.insert_lines(ed.line_end(ed.pair_end(last_key, last_value)), lines)


def _append_flow(ed: _Editor, seq: SequenceNode, entries: list[Mapping[str, Any]]) -> None:
    flow = ", ".join(_flow_entry(e) for e in entries)
    if seq.value:
        ed.put(ed.end_of(seq.value[-1]), ed.end_of(seq.value[-1]), ", " + flow)
    else:
        ed.put(seq.end_mark.index - 1, seq.end_mark.index - 1, flow)


def _append_entries(ed: _Editor, seq: SequenceNode, entries: list[Mapping[str, Any]]) -> None:
    if not entries:
        return
    if seq.flow_style:
        _append_flow(ed, seq, entries)
        return
    last = seq.value[-1]
    dash = ed.dash_column(last)
    if isinstance(last, MappingNode) and last.flow_style:
        lines = [f"{' ' * dash}- {_flow_entry(e)}" for e in entries]
    else:
        keys = last.start_mark.column if isinstance(last, MappingNode) else dash + 2
        lines = [line for e in entries for line in _block_entry(e, dash, keys)]
    ed.insert_lines(ed.line_end(ed.end_of(last)), lines)


def _add_images(ed: _Editor, root: MappingNode, entries: list[Mapping[str, Any]]) -> None:
    """`images:` with no list (empty or null), or no `images` at all: the list written in block style."""
    found = _find(root, "images")
    if found is None:
        if root.flow_style:
            raise ConfigError(f"{ed.where}: write the kustomization in block style (one key per line)")
        column = root.value[0][0].start_mark.column if root.value else 0
        head, dash = [f"{' ' * column}images:"], column + 2
        at = ed.line_end(ed.end_of(root))
    else:
        key, value = found
        if not isinstance(value, ScalarNode) or root.flow_style:
            raise ConfigError(f"{ed.where}: `images` must be a list of name/newName/newTag/digest entries")
        if value.start_mark.index != value.end_mark.index:  # `images: ~` or `images: null`
            ed.put(ed.after_colon(key), value.end_mark.index, "")
        head, dash = [], key.start_mark.column + 2
        at = ed.line_end(ed.pair_end(key, value))
    ed.insert_lines(at, head + [line for e in entries for line in _block_entry(e, dash, dash + 2)])


def rewrite(text: str, root: Node, before: Mapping[str, Any], after: Mapping[str, Any], where: str) -> str:
    """`text` (whose nodes are `root`, whose document is `before`) with the `images` of `after`:
    `before` with the pins applied. Nothing outside the changed values moves."""
    if not isinstance(root, MappingNode):
        raise ConfigError(f"{where}: not a kustomization (a mapping with resources and images)")
    ed = _Editor(text, where)
    old, new = list(before.get("images") or []), list(after.get("images") or [])
    found = _find(root, "images")
    if found and isinstance(found[1], SequenceNode):
        _update_list(ed, found[1], old, new)
    elif new:
        _add_images(ed, root, new)
    return ed.result()


def _update_list(ed: _Editor, seq: SequenceNode, old: list[Any], new: list[Any]) -> None:
    _check_editable(seq, ed.where)
    for item, was, now in zip(seq.value, old, new, strict=False):
        if isinstance(item, MappingNode) and isinstance(was, Mapping) and isinstance(now, Mapping):
            _update_entry(ed, item, was, now)
    _append_entries(ed, seq, new[len(old) :])
