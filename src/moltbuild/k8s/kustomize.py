"""`invoke k8s.set-images`: pin what was pushed in the kustomization, as `kustomize edit set
image` would, rewriting only the values that change: every comment, the order, a leading `---`
and the formatting of everything else stay byte for byte. The lock that serialises writers lives
outside the work tree, and a dry run creates nothing at all."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from moltbuild import report
from moltbuild.errors import ConfigError
from moltbuild.files import load_yaml, read_text, refuse_aliases, write_atomic
from moltbuild.k8s.inplace import NOT_A_STRING, image_entries, images_span, rewrite
from moltbuild.project import ImageConfig, find_project_root
from moltbuild.refs import ImageRef
from moltbuild.report import ImageRecord
from moltbuild.system.locks import held, lock_outside_tree
from moltbuild.system.processes import Runner


def yaml_string(value: str) -> str:
    """`value` as a scalar that reads back as the same string in any YAML version."""
    return DoubleQuotedScalarString(value) if NOT_A_STRING.fullmatch(value) else value


@dataclass(frozen=True)
class Pin:
    name: str  # the image name the manifests use (the entry's `name`)
    new_name: str
    new_tag: str
    digest: str | None


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


def _matches(entry: Any, pin: Pin) -> bool:
    if not isinstance(entry, dict) or "name" not in entry:
        return False
    try:
        return ImageRef.parse(str(entry["name"]), "name").bare() == ImageRef.parse(pin.name, "name").bare()
    except ConfigError:
        return str(entry["name"]) == pin.name


def apply_pins(doc: Any, pins: list[Pin]) -> list[str]:
    """Set each pin in `doc` (in place); returns what changed, a line per image."""
    images = doc.get("images")
    if images is None:
        images = doc["images"] = CommentedSeq()
    changed = []
    for pin in pins:
        entry = next((e for e in images if _matches(e, pin)), None)
        if entry is None:
            entry = CommentedMap(name=pin.name)
            images.append(entry)
        wanted = {"newName": pin.new_name, "newTag": pin.new_tag, "digest": pin.digest}
        before = {k: (str(entry[k]) if k in entry else None) for k in wanted}
        if before == wanted:
            continue
        for key, value in wanted.items():
            if value is None:
                entry.pop(key, None)
            else:
                entry[key] = yaml_string(value)
        ref = ImageRef.parse(pin.new_name, "newName").with_tag(pin.new_tag)
        changed.append(f"{pin.name} -> {ref.with_digest(pin.digest) if pin.digest else ref}")
    return changed


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
    for pin in pins:
        at = next((i for i, (name, _, _) in enumerate(entries) if _matches({"name": name}, pin)), None)
        groups.setdefault(len(entries) - 1 if at is None else at, []).append(pin)
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
    """Pin `pins` in `kustomization`, atomically, under a lock kept outside the work tree (a lock
    file beside it would make the next build `-dirty`). A dry run prints the diff and creates
    nothing: no lock, no temporary file, no folder. A symbolic link: its target is pinned (and
    locked), if it lies in the repository `root`."""
    say = runner.say
    if not kustomization.is_file():
        raise ConfigError(f"{kustomization} not found; pass --kustomization PATH")
    kustomization = _target(kustomization, root)
    if dry_run:
        text = read_text(kustomization, "kustomization", keep_newlines=True)
        new, changed = edited(kustomization, text, pins)
        if changed:
            diff = difflib.unified_diff(
                text.splitlines(keepends=True),
                new.splitlines(keepends=True),
                str(kustomization),
                str(kustomization),
            )
            say("".join(diff).rstrip("\n"))
    else:
        lock = lock_outside_tree(kustomization, runner)
        with held(lock, "invoke k8s.set-images", str(kustomization), say, timeout=60):
            text = read_text(kustomization, "kustomization", keep_newlines=True)
            new, changed = edited(kustomization, text, pins)
            if changed:
                write_atomic(kustomization, new)
        for line in changed:
            say(f"pinned {line}")
    if not changed:
        say(f"{kustomization}: already pins what the report says was pushed; nothing to change")
    return changed


def pushed_records(report_path: Path, only: str = "") -> list[ImageRecord]:
    """The records to pin: pushed, with a digest. Failed or unpushed images are never pinned."""
    names = [n.strip() for n in only.split(",") if n.strip()] or None
    records = report.require(report_path, names)
    unknown = sorted(set(names or ()) - {r.name for r in records})
    if unknown:
        raise ConfigError(f"{report_path} records no image named {unknown[0]!r}; --only takes image names")
    skipped = [r for r in records if not r.outcome.in_registry or not r.digest]
    if names and skipped:
        r = skipped[0]
        raise ConfigError(f"{r.name} was not pushed ({r.outcome.value}); push it first, then pin it")
    pinnable = [r for r in records if r not in skipped]
    if not pinnable:
        raise ConfigError(f"{report_path} records no pushed image; run `invoke build --push` first")
    return pinnable


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
