"""`invoke k8s.set-images`: pin what was pushed in the kustomization, as `kustomize edit set
image` would, keeping every comment, order and the formatting of entries it does not touch."""

from __future__ import annotations

import difflib
import io
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from moltbuild import report
from moltbuild.errors import ConfigError
from moltbuild.files import load_yaml, write_atomic
from moltbuild.project import find_project_root, load_images, read_tool_table
from moltbuild.refs import ImageRef
from moltbuild.report import ImageRecord

# Plain scalars YAML 1.1 or 1.2 would read as something else than a string: 0012345, 1234e56, 1_000,
# 0x1f, true, on, null, ... A tag like that must be written quoted to come back unchanged.
_NOT_A_STRING = re.compile(
    r"[-+]?[0-9][0-9_]*(\.[0-9_]*)?([eE][-+]?[0-9]+)?|[-+]?\.[0-9]+([eE][-+]?[0-9]+)?|0[xXoObB][0-9a-fA-F_]+|"
    r"[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)|[0-9]+(:[0-5]?[0-9])+(\.[0-9]*)?|"
    r"(?i:y|yes|n|no|true|false|on|off|null|~)|"
)


def yaml_string(value: str) -> str:
    """`value` as a scalar that reads back as the same string in any YAML version."""
    return DoubleQuotedScalarString(value) if _NOT_A_STRING.fullmatch(value) else value


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
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold a long line we did not write
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


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


def _dump(doc: Any) -> str:
    out = io.StringIO()
    _yaml().dump(doc, out)
    return out.getvalue()


def set_images(
    kustomization: Path,
    pins: list[Pin],
    *,
    dry_run: bool = False,
    say: Callable[[str], None] = print,
) -> list[str]:
    """Pin `pins` in `kustomization` under a file lock, atomically; a dry run prints the diff."""
    if not kustomization.is_file():
        raise ConfigError(f"{kustomization} not found; pass --kustomization PATH")
    with FileLock(str(kustomization) + ".lock", timeout=60):
        try:
            text = kustomization.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{kustomization}: not UTF-8 text; re-save it as UTF-8") from None
        doc = _load(kustomization, text)
        changed = apply_pins(doc, pins)
        if not changed:
            say(f"{kustomization}: already pins what the report says was pushed; nothing to change")
            return []
        new = _dump(doc)
        if dry_run:
            diff = difflib.unified_diff(
                text.splitlines(keepends=True),
                new.splitlines(keepends=True),
                str(kustomization),
                str(kustomization),
            )
            say("".join(diff).rstrip("\n"))
            return changed
        write_atomic(kustomization, new)
    for line in changed:
        say(f"pinned {line}")
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
    say: Callable[[str], None] = print,
) -> list[str]:
    """`invoke k8s.set-images`: every pushed image of the report, pinned by tag and digest."""
    root = find_project_root()
    tool = read_tool_table(root)
    names = {name: cfg.manifest_name for name, cfg in load_images(root, tool).items()}
    records = pushed_records(report_path or report.default_path(root), only)
    pins = pins_from(records, names, with_digest=not no_digest)
    return set_images(kustomization or root / "k8s" / "kustomization.yml", pins, dry_run=dry_run, say=say)
