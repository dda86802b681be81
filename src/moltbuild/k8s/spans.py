"""Where a kustomization's top-level `images` block and its entries are in the text, found from
one pass of the C parser's events: `k8s.set-images` then parses round trip only what it changes
(a 2 MB kustomization is not read through the slow parser)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from moltbuild.files import yaml_events

_ODD_BREAKS = re.compile(r"\r(?!\n)|[\x85\u2028\u2029]")  # line breaks YAML counts and we would not


def _root_keys(text: str) -> Iterator[tuple[str | None, int]]:
    """The top-level keys of a block-mapping document, (key, line), then (None, line) of the first
    line past the mapping; nothing at all for anything else. One pass of the C parser over the events."""
    from ruamel.yaml.events import CollectionStartEvent, MappingStartEvent

    events = iter(yaml_events(text))
    for event in events:
        if isinstance(event, CollectionStartEvent):
            if isinstance(event, MappingStartEvent) and not event.flow_style:
                yield from _keys_of_root(events)
            return


def _keys_of_root(events: Iterator[Any]) -> Iterator[tuple[str | None, int]]:
    """`_root_keys` from just past the root mapping's start."""
    from ruamel.yaml.events import CollectionEndEvent, CollectionStartEvent, NodeEvent, ScalarEvent

    depth, children = 1, 0
    for event in events:
        if depth == 1 and isinstance(event, NodeEvent):
            if children % 2 == 0:
                yield (event.value if isinstance(event, ScalarEvent) else "", event.start_mark.line)
            children += 1
        if isinstance(event, CollectionStartEvent):
            depth += 1
        elif isinstance(event, CollectionEndEvent):
            depth -= 1
            if depth == 0:
                mark = event.start_mark  # mid-line: the mapping ends with that line
                yield None, mark.line + (1 if mark.column else 0)
                return


def _is_comment(line: str, indent: int) -> bool:
    """A comment line no block scalar could hold (one holds only lines indented deeper)."""
    body = line.lstrip(" ")
    return body.startswith("#") and len(line) - len(body) <= indent


def _plain_root_keys(text: str) -> list[tuple[str | None, int]] | None:
    """`_root_keys` of a plain block mapping read in one pass; None for anything else."""
    from ruamel.yaml.error import YAMLError

    if _ODD_BREAKS.search(text):
        return None
    try:
        keys = list(_root_keys(text))
    except YAMLError:
        return None
    if len(keys) < 2 or keys[-1][0] is not None or any(k == "" for k, _ in keys[:-1]):
        return None
    return keys


def _images_place(text: str, keys: list[tuple[str | None, int]], at: Any) -> tuple[int, int, str]:
    """With no `images`: after the last value, before the comments that close the file."""
    first = text[at(keys[0][1]) :]
    indent = first[: len(first) - len(first.lstrip(" "))]
    nl, line = "\r\n" if "\r\n" in text else "\n", keys[-1][1]
    while line > keys[-2][1] + 1 and _is_comment(text[at(line - 1) : at(line)], len(indent)):
        line -= 1
    return at(line), at(line), f"{indent}images:{nl}"


def images_span(text: str) -> tuple[int, int, str] | None:
    """Where the top-level `images` block is in `text`: from its key's line to the next top-level
    key's line (or past the mapping), and its text; with no `images`, an empty place past the
    mapping and the `images:` line to put there. None when the document is not a plain block
    mapping or cannot be read in one pass (the caller then parses the whole file)."""
    keys = _plain_root_keys(text)
    if keys is None:
        return None
    starts = [0, *(m.end() for m in re.finditer("\n", text))]
    at = lambda line: starts[line] if line < len(starts) else len(text)  # noqa: E731
    found = next((i for i, (k, _) in enumerate(keys) if k == "images"), None)
    if found is None:
        return _images_place(text, keys, at)
    start, end = at(keys[found][1]), at(keys[found + 1][1])
    if not text[start:].lstrip(" ").startswith("images") or start >= end:
        return None
    return start, end, text[start:end]


def _entry_names(block: str) -> list[list[Any]] | None:
    """[name, first line] of each entry of the block's `images` list; None unless block style."""
    from ruamel.yaml.events import (
        CollectionEndEvent,
        CollectionStartEvent,
        NodeEvent,
    )

    entries: list[list[Any]] = []
    depth, children, key = 0, 0, None
    for event in yaml_events(block):
        if depth == 3 and isinstance(event, NodeEvent):  # a key or a value of an entry
            key = _entry_key(event, children, key, entries)
            children += 1
        if isinstance(event, CollectionStartEvent):
            depth += 1
            if not _block_style(event, depth):
                return None
            if depth == 3:
                entries.append(["", event.start_mark.line])
                children = 0
        elif isinstance(event, CollectionEndEvent):
            depth -= 1
    return entries


def _entry_key(event: Any, children: int, key: str | None, entries: list[list[Any]]) -> str | None:
    """At an entry's key or value: a `name` value noted; returns the key the next value follows."""
    from ruamel.yaml.events import ScalarEvent

    is_scalar = isinstance(event, ScalarEvent)
    if children % 2:
        if key == "name" and is_scalar:
            entries[-1][0] = event.value
        return None
    return event.value if is_scalar else None


def _block_style(event: Any, depth: int) -> bool:
    """The `images` list (depth 2) is a block sequence, its entries (depth 3) block mappings."""
    from ruamel.yaml.events import MappingStartEvent, SequenceStartEvent

    if depth not in (2, 3):
        return True
    return not event.flow_style and isinstance(event, SequenceStartEvent if depth == 2 else MappingStartEvent)


def image_entries(block: str) -> list[tuple[str, int, int]] | None:
    """The entries of an `images` block (as `images_span` cuts it): (name, start, end) of each,
    from its `- ` line to the next entry's. None unless every entry is a block mapping opening on
    its own `- ` line (the caller then edits the block as a whole)."""
    from ruamel.yaml.error import YAMLError

    try:
        entries = _entry_names(block)
    except YAMLError:
        return None
    lines = block.split("\n")
    if not entries or any(not lines[line].lstrip(" ").startswith("- ") for _, line in entries):
        return None
    starts = [0, *(m.end() for m in re.finditer("\n", block))]
    bounds = [starts[line] for _, line in entries] + [len(block)]
    return [(name, bounds[i], bounds[i + 1]) for i, (name, _) in enumerate(entries)]
