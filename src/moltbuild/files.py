"""Files the tool reads and writes, one way each: YAML through one loader (errors name the file
and line), every write atomic (a temporary file beside it, fsync, rename, fsync the folder)."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from moltbuild.errors import ConfigError

MAX_YAML_BYTES = 8 * 1024 * 1024  # a manifest or kustomization, not a data dump
# A full disk, a quota or a read-only mount: the user's to fix, not a moltbuild bug.
_NO_ROOM = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is reached",
    errno.EROFS: "read-only",
}


def _too_large(path: Path, size: int, what: str) -> ConfigError:
    return ConfigError(
        f"{path}: {size} bytes is too large for a {what} (at most {MAX_YAML_BYTES // (1024 * 1024)} MiB); "
        "split it into smaller files"
    )


def read_text(path: Path, what: str = "file", *, keep_newlines: bool = False) -> str:
    """The file as text. `keep_newlines`: CRLF stays CRLF (a file rewritten in place keeps its
    line endings); by default every line ending reads as \\n."""
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise _too_large(path, size, what)
        if keep_newlines:
            return path.read_bytes().decode("utf-8")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason}); re-save it as UTF-8") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory, not a {what}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what} ({exc.strerror})") from None


MAX_YAML_DEPTH = 100  # a manifest nests some 20 levels; ruamel's loaders overflow past a few hundred


def _first_problem(source: str, *, pure: bool) -> tuple[Any, str] | None:
    """The first alias, or the first collection nested too deeply, and what it is."""
    from ruamel.yaml import YAML
    from ruamel.yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent

    depth = 0
    for event in YAML(typ="safe", pure=pure).parse(source):
        if isinstance(event, AliasEvent):
            return event, f"YAML aliases (*{event.anchor}) are not accepted here; write the value out in full"
        if isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                return event, f"nested more than {MAX_YAML_DEPTH} levels deep; flatten it"
        elif isinstance(event, CollectionEndEvent):
            depth -= 1
    return None


def refuse_aliases(path: Path, source: str) -> None:
    """No anchor/alias (&/*) in a manifest or kustomization: an alias bomb (billion laughs) expands
    to gigabytes; and no nesting deep enough to overflow a loader (a crash, not an error). Found
    from the C parser's event stream, linear in the text, before any loading."""
    from ruamel.yaml.error import YAMLError

    try:
        found = _first_problem(source, pure=False)
    except YAMLError:  # the C parser disagrees: ask the pure one (slower, same verdict)
        try:
            found = _first_problem(source, pure=True)
        except YAMLError:
            return  # invalid YAML: the loader names where
    if found is not None:
        event, problem = found
        line = event.start_mark.line + 1 if event.start_mark else 0
        raise ConfigError(f"{path}:{line}: {problem}")


def _load(loader: Any, source: str, multi: bool) -> Any:
    if multi:
        return [doc for doc in loader.load_all(source) if doc is not None]
    return loader.load(source)


def _load_either(source: str, typ: str, multi: bool) -> Any:
    """The C loader (fast); where its scanner or parser refuses, the pure one, which reads some
    valid YAML the C one does not (`{image: 127.0.0.1:5000/x}`, as kubectl reads it)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.parser import ParserError
    from ruamel.yaml.scanner import ScannerError

    try:
        return _load(YAML(typ=typ), source, multi)
    except (ScannerError, ParserError):
        return _load(YAML(typ=typ, pure=True), source, multi)


def yaml_events(text: str) -> list[Any]:
    """The parser's events of `text` (for positions: what a load drops), with the same fallback
    to the pure parser as `load_yaml` where the C one refuses valid YAML."""
    from ruamel.yaml import YAML
    from ruamel.yaml.parser import ParserError
    from ruamel.yaml.scanner import ScannerError

    try:
        return list(YAML(typ="safe").parse(text))
    except (ScannerError, ParserError):
        return list(YAML(typ="safe", pure=True).parse(text))


def load_yaml(
    path: Path, *, text: str | None = None, typ: str = "safe", multi: bool = False, yaml: Any = None
) -> Any:
    """One document (or, `multi`, every non-empty one) of a YAML file. `typ` as ruamel names it:
    safe, base (every scalar a string), rt (round trip); or a configured `yaml`. At most
    MAX_YAML_BYTES, no aliases."""
    from ruamel.yaml.error import YAMLError  # imported on use: most commands read no YAML

    source = read_text(path, "YAML file") if text is None else text
    if len(source) > MAX_YAML_BYTES:
        raise _too_large(path, len(source), "YAML file")
    refuse_aliases(path, source)
    try:
        return _load(yaml, source, multi) if yaml is not None else _load_either(source, typ, multi)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML; fix the syntax") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to read; flatten it") from None


@contextmanager
def room_to_write(path: Path) -> Iterator[None]:
    """A write that fails for want of room (full disk, quota, read-only) as one line naming `path`."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _NO_ROOM:
            raise
        raise ConfigError(
            f"{path}: cannot write ({_NO_ROOM[exc.errno]}); "
            "free space there (or make it writable) and run again"
        ) from None


def write_atomic(path: Path, text: str, *, mode: int | None = None) -> None:
    """Replace `path` with `text` all at once: readers see the old file or the new, never half.
    The file keeps its permissions (or gets `mode`). No room to write: a ConfigError naming `path`."""
    with room_to_write(path):
        _write_atomic(path, text, mode)


def _write_atomic(path: Path, text: str, mode: int | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode is None:
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """The rename itself survives a crash only once the folder is synced."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
