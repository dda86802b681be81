"""The build context as the builder sees it (.dockerignore applied) and the input digest."""

from __future__ import annotations

import concurrent.futures as cf
import gzip
import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

import pathspec

# Threads pay off for large files only: for many small ones the GIL hand-offs cost more (measured).
PARALLEL_BYTES = 32 << 20
SMALL_FILE = 1 << 20


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


def _negation_prefixes(lines: Iterable[str]) -> list[str]:
    """The literal start of each `!` pattern: a directory can hold a re-included file only if
    one of these could lead into it ('' for a pattern that starts with a wildcard)."""
    prefixes = []
    for raw in lines:
        line = raw.strip()
        if line.startswith("!"):
            body = line[1:].lstrip("/")
            prefixes.append(re.split(r"[*?\[]", body, maxsplit=1)[0])
    return prefixes


class ContextFile(NamedTuple):  # a tuple: 50k of them are made per hash of a large context
    rel: str  # POSIX path below the context
    path: str
    mode: int
    size: int
    symlink: bool


def _matcher(spec: pathspec.PathSpec):
    """`spec.match_file` for clean relative paths, without its per-call normalising: the last
    pattern that matches decides, as in pathspec."""
    rules = [(p.regex.match, p.include) for p in spec.patterns if p.include is not None and p.regex]

    def ignored(rel: str) -> bool:
        verdict = False
        for match, include in rules:
            if match(rel):
                verdict = include
        return verdict

    return ignored


def _walk(context: Path) -> list[ContextFile]:
    """One scandir pass, one lstat per entry; ignored directories are not entered unless a `!`
    pattern could re-include something below them."""
    ignore_file = context / ".dockerignore"
    lines = ignore_file.read_text().splitlines() if ignore_file.is_file() else []
    ignored, negations = _matcher(dockerignore_spec(lines)), _negation_prefixes(lines)
    found: list[ContextFile] = []
    stack = [("", str(context))]
    while stack:
        rel_dir, abs_dir = stack.pop()
        with os.scandir(abs_dir) as entries:
            for entry in entries:
                rel = f"{rel_dir}{entry.name}"
                if entry.is_dir():  # follows a symlink, like os.walk: never entered, never listed
                    if entry.is_symlink():
                        continue
                    if ignored(rel) and not any(
                        (rel + "/").startswith(p) or p.startswith(rel + "/") for p in negations
                    ):
                        continue
                    stack.append((rel + "/", entry.path))
                elif not ignored(rel):
                    st = entry.stat(follow_symlinks=False)
                    found.append(ContextFile(rel, entry.path, st.st_mode, st.st_size, entry.is_symlink()))
    found.sort(key=lambda f: f.rel)
    return found


def context_files(context: Path) -> list[str]:
    """Relative POSIX paths of the files a build would send, sorted."""
    return [f.rel for f in _walk(context)]


def _file_digest(path: Path | str, symlink: bool | None = None) -> str:
    if symlink if symlink is not None else os.path.islink(path):
        return hashlib.sha256(b"symlink:" + os.readlink(path).encode()).hexdigest()
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _small_digest(path: str, size: int) -> str:
    """One open, one read, no buffered file object: most context files are small."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, size + 1)
        if len(data) > size:  # grew since the stat: read the rest too
            rest = [data]
            while chunk := os.read(fd, 1 << 20):
                rest.append(chunk)
            data = b"".join(rest)
    finally:
        os.close(fd)
    return hashlib.sha256(data).hexdigest()


def _line(f: ContextFile) -> bytes:
    executable = bool(f.mode & 0o111) and not f.symlink
    if f.symlink or f.size > SMALL_FILE:
        digest = _file_digest(f.path, f.symlink)
    else:
        digest = _small_digest(f.path, f.size)
    return f"file {f.rel} {'x' if executable else '-'} {digest}\n".encode()


def input_digest(
    context: Path,
    dockerfile: Path,
    build_args: Mapping[str, str],
    target: str | None,
    platforms: Iterable[str],
) -> str:
    """sha256 over everything that decides the image's content, in a stable order."""
    files = _walk(context)
    h = hashlib.sha256()
    if sum(f.size for f in files) >= PARALLEL_BYTES:  # reads and hashlib release the GIL
        with cf.ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
            for line in pool.map(_line, files, chunksize=64):
                h.update(line)
    else:
        for f in files:
            h.update(_line(f))
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
