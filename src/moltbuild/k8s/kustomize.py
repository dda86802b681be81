"""`invoke k8s.set-images`: pin what was pushed in the kustomization, rewriting only the values
that change: every comment, the order, a leading `---` and the formatting of everything else stay
byte for byte. Which entry each pin edits comes from the deployment model (`k8s/pins`): the one
kustomize applies to the containers. The lock that serialises writers lives outside the work
tree, and a dry run creates nothing at all."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from moltbuild import report
from moltbuild.errors import ConfigError
from moltbuild.files import load_yaml, read_text, refuse_aliases, write_atomic
from moltbuild.k8s import deployment
from moltbuild.k8s.inplace import NOT_A_STRING, rewrite
from moltbuild.k8s.pins import NEW, Pin, planned
from moltbuild.k8s.spans import image_entries, images_span
from moltbuild.project import ImageConfig, find_project_root, parse_only
from moltbuild.report import ImageRecord
from moltbuild.system.locks import held, lock_outside_tree
from moltbuild.system.processes import Runner


def yaml_string(value: str) -> str:
    """`value` as a scalar that reads back as the same string in any YAML version."""
    return DoubleQuotedScalarString(value) if NOT_A_STRING.fullmatch(value) else value


def pins_from(records: Iterable[ImageRecord], names: dict[str, str], *, with_digest: bool) -> list[Pin]:
    """`names` maps an image name (api) to the name the manifests use for it."""
    return [
        Pin(names.get(r.name, r.repository), r.repository, r.pin_tag, r.digest if with_digest else None)
        for r in records
    ]


def _yaml() -> YAML:
    """Round trip: the nodes keep where each value starts and ends in the text."""
    return YAML(typ="rt")


def _load(path: Path, text: str) -> Any:
    doc = load_yaml(path, text=text, yaml=_yaml())
    if not isinstance(doc, CommentedMap):
        raise ConfigError(f"{path}: not a kustomization (a mapping with resources and images)")
    images = doc.get("images")
    if images is not None and not isinstance(images, CommentedSeq):
        raise ConfigError(f"{path}: `images` must be a list of name/newName/newTag/digest entries")
    return doc


def entry_index(pin: Pin, names: list[str | None]) -> int | None:
    """Which of the entries (by name) `pin` edits; None: a new entry."""
    if pin.entry is not None:
        return pin.entry if pin.entry >= 0 else None
    return next((i for i, name in enumerate(names) if name == pin.name), None)


def apply_pins(doc: Any, pins: list[Pin]) -> list[str]:
    """Set each pin in `doc` (in place); returns what changed, a line per image."""
    images = doc.get("images")
    if images is None:
        images = doc["images"] = CommentedSeq()
    return [pin.line() for pin in pins if _set(_entry_of(images, pin), pin)]


def _entry_of(images: Any, pin: Pin) -> Any:
    names = [str(e["name"]) if isinstance(e, dict) and "name" in e else None for e in images]
    at = entry_index(pin, names)
    if at is None:
        images.append(CommentedMap(name=pin.name))
        at = len(images) - 1
    return images[at]


def _set(entry: Any, pin: Pin) -> bool:
    """Write the pin's values in `entry`; False when it holds them already."""
    if {k: (str(entry[k]) if k in entry else None) for k in pin.values} == pin.values:
        return False
    for key, value in pin.values.items():
        if value is None:
            entry.pop(key, None)
        else:
            entry[key] = yaml_string(value)
    return True


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value if value is None or isinstance(value, bool | int | float) else str(value)


def edited(path: Path, text: str, pins: list[Pin]) -> tuple[str, list[str]]:
    """`text` with `pins` set, and what changed; only the changed values are rewritten. Only the
    `images` block is parsed round trip (the rest of a large file is scanned once, in C): every
    byte outside it stays as it was, and the time grows with the file's size, linearly."""
    refuse_aliases(path, text)
    span = images_span(text)
    if span is None:  # not a plain block mapping: the whole file, round trip
        return _edited(path, text, pins)
    start, end, block = span
    new, changed = _edited_entries(path, block, pins) if start < end else _edited(path, block, pins)
    if not changed:
        return text, []
    # a last line without a line break gets one before what follows it
    lead = "\n" if start == end and start and not text[:start].endswith("\n") else ""
    return text[:start] + lead + new + text[end:], changed


def _edited_entries(path: Path, block: str, pins: list[Pin]) -> tuple[str, list[str]]:
    """The `images` block with `pins` set, parsing round trip only the entries that change: each
    pin's first matching entry, and the last entry (new entries go after it). A block not made of
    plain block entries is edited whole."""
    entries = image_entries(block)
    if entries is None:
        return _edited(path, block, pins)
    head = block[: block.find("\n") + 1]  # the `images:` line, above each entry parsed alone
    groups: dict[int, list[Pin]] = {}
    names: list[str | None] = [name for name, _, _ in entries]
    for pin in pins:
        at = entry_index(pin, names)  # in the block parsed alone, the entry is the first, or new
        groups.setdefault(len(entries) - 1 if at is None else at, []).append(
            replace(pin, entry=NEW if at is None else 0)
        )
    out, done, changed = [], 0, []
    for at in sorted(groups):
        _, start, end = entries[at]
        new, lines = _edited(path, head + block[start:end], groups[at])
        if not new.startswith(head):
            return _edited(path, block, pins)
        out += [block[done:start], new[len(head) :]]
        done, changed = end, changed + lines
    order = {pin.name: i for i, pin in reversed(list(enumerate(pins)))}
    changed.sort(key=lambda line: order.get(line.split(" -> ")[0], len(pins)))
    return "".join([*out, block[done:]]), changed


def _edited(path: Path, text: str, pins: list[Pin]) -> tuple[str, list[str]]:
    before, after = _load(path, text), _load(path, text)
    changed = apply_pins(after, pins)
    if not changed:
        return text, []
    new = rewrite(text, _yaml().compose(text), before, after, str(path))
    if _plain(_load(path, new)) != _plain(after):  # the edit must mean exactly what was asked
        raise ConfigError(
            f"{path}: pinning in place would change more than the pinned values (a moltbuild bug, please "
            "report it); pin the images by hand"
        )
    return new, changed


def _target(kustomization: Path, root: Path | None) -> Path:
    """The file to edit: a link's target (the link stays a link), never one outside the repository."""
    if not kustomization.is_symlink():
        return kustomization
    target = kustomization.resolve()
    if root is not None and not target.is_relative_to(root.resolve()):
        raise ConfigError(
            f"{kustomization} is a link to {target}, outside the repository {root}; "
            "pin that file directly (--kustomization) or point the link inside the repository"
        )
    return target


def set_images(
    kustomization: Path, pins: list[Pin], *, runner: Runner, dry_run: bool = False, root: Path | None = None
) -> list[str]:
    """Pin `pins` in `kustomization`, each in the entry kustomize applies (`pins.planned`),
    atomically, under a lock kept outside the work tree (a lock file beside it would make the next
    build `-dirty`). A dry run prints the diff and creates nothing: no lock, no temporary file, no
    folder. A symbolic link: its target is pinned (and locked), if it lies in the repository `root`."""
    say = runner.say
    if not kustomization.is_file():
        raise ConfigError(f"{kustomization} not found; pass --kustomization PATH")
    target = _target(kustomization, root)
    if dry_run:
        text, new, changed = _pinned(kustomization, target, pins, root)
        if changed:
            diff = difflib.unified_diff(
                text.splitlines(keepends=True), new.splitlines(keepends=True), str(target), str(target)
            )
            say("".join(diff).rstrip("\n"))
    else:
        lock = lock_outside_tree(target, runner)
        with held(lock, "invoke k8s.set-images", str(target), say, timeout=60):
            _, new, changed = _pinned(kustomization, target, pins, root)
            if changed:
                write_atomic(target, new)
        for line in changed:
            say(f"pinned {line}")
    if not changed:
        say(f"{target}: already pins what the report says was pushed; nothing to change")
    return changed


def _pinned(
    kustomization: Path, target: Path, pins: list[Pin], root: Path | None
) -> tuple[str, str, list[str]]:
    """The text of `target` before and after, and what changed. The tree is read under the lock:
    another writer's entries are seen."""
    aimed = planned(deployment.load(kustomization, root), pins)
    text = read_text(target, "kustomization", keep_newlines=True)
    new, changed = edited(target, text, aimed)
    return text, new, changed


def pushed_records(report_path: Path, only: str = "") -> list[ImageRecord]:
    """The records to pin: pushed, with a digest. Failed or unpushed images are never pinned."""
    names, records = _selected(report_path, only)
    pinnable = [r for r in records if r.outcome.in_registry and r.digest]
    skipped = [r for r in records if r not in pinnable]
    if names and skipped:
        why = f"{skipped[0].name} was not pushed ({skipped[0].outcome.value})"
        raise ConfigError(f"{why}; push it first, then pin it")
    if not pinnable:
        raise ConfigError(f"{report_path} records no pushed image; run `invoke build --push` first")
    return pinnable


def _selected(report_path: Path, only: str) -> tuple[list[str], list[ImageRecord]]:
    """The names `--only` gives, and the report's records of them (all, without `--only`)."""
    names = parse_only(only)
    records = report.require(report_path, names or None)
    unknown = [n for n in names if n not in {r.name for r in records}]
    if unknown:
        raise ConfigError(f"{report_path} records no image named {unknown[0]!r}; --only takes image names")
    return names, records


def pin_pushed(
    *,
    report_path: Path | None = None,
    kustomization: Path | None = None,
    only: str = "",
    no_digest: bool = False,
    dry_run: bool = False,
    runner: Runner,
    images: Mapping[str, ImageConfig],
    root: Path | None = None,
) -> list[str]:
    """`invoke k8s.set-images`: every pushed image of the report, pinned by tag and digest."""
    root = root or find_project_root()
    names = {name: cfg.manifest_name for name, cfg in images.items()}
    records = pushed_records(report_path or report.default_path(root), only)
    pins = pins_from(records, names, with_digest=not no_digest)
    path = kustomization or root / "k8s" / "kustomization.yml"
    return set_images(path, pins, runner=runner, dry_run=dry_run, root=root)
