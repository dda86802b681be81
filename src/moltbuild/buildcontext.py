"""The build context as the builder sees it (.dockerignore applied) and the input digest."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import pathspec


def dockerignore_spec(lines: Iterable[str]) -> pathspec.PathSpec:
    """.dockerignore patterns are anchored at the context root, unlike .gitignore's."""
    patterns = []
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        body = line[1:] if negate else line
        body = os.path.normpath(body.lstrip("/")).replace(os.sep, "/") if body.strip("/") else body
        patterns.append(("!" if negate else "") + "/" + body.lstrip("/"))
    return pathspec.PathSpec.from_lines("gitignore", patterns)


def context_files(context: Path) -> list[str]:
    """Relative POSIX paths of the files a build would send, sorted."""
    ignore_file = context / ".dockerignore"
    spec = dockerignore_spec(ignore_file.read_text().splitlines() if ignore_file.is_file() else [])
    files = []
    for dirpath, dirnames, filenames in os.walk(context):
        rel_dir = Path(dirpath).relative_to(context)
        dirnames.sort()
        for name in filenames:
            rel = (rel_dir / name).as_posix()
            if not spec.match_file(rel):
                files.append(rel)
    return sorted(files)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    if path.is_symlink():
        h.update(b"symlink:" + os.readlink(path).encode())
        return h.hexdigest()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def input_digest(
    context: Path,
    dockerfile: Path,
    build_args: Mapping[str, str],
    target: str | None,
    platforms: Iterable[str],
) -> str:
    """sha256 over everything that decides the image's content, in a stable order."""
    h = hashlib.sha256()
    for rel in context_files(context):
        path = context / rel
        executable = os.access(path, os.X_OK) and not path.is_symlink()
        h.update(f"file {rel} {'x' if executable else '-'} {_file_digest(path)}\n".encode())
    h.update(b"dockerfile " + _file_digest(dockerfile).encode() + b"\n")
    meta = {
        "build_args": dict(sorted(build_args.items())),
        "target": target or "",
        "platforms": sorted(platforms),
    }
    h.update(json.dumps(meta, sort_keys=True).encode())
    return "sha256:" + h.hexdigest()


def _tar_entry(tar: tarfile.TarFile, path: Path, name: str) -> None:
    info = tar.gettarinfo(str(path), arcname=name)
    # Owner and time are not part of the inputs: the same files give the same bytes anywhere.
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    if info.isreg():
        with path.open("rb") as fh:
            tar.addfile(info, fh)
    else:
        tar.addfile(info)


def context_tarball(context: Path, dockerfile: Path) -> bytes:
    """The gzip'd tar a remote builder receives: `context/` holds exactly the files a local build
    would send (.dockerignore applied), `Dockerfile` beside it, so it never lands in the image."""
    buf = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for rel in context_files(context):
            _tar_entry(tar, context / rel, f"context/{rel}")
        _tar_entry(tar, dockerfile, "Dockerfile")
    return buf.getvalue()
