"""The build context as the builder sees it (.dockerignore applied) and the input digest."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from moltbuild.errors import ConfigError
from moltbuild.plan.ignore import IgnoreRules

if TYPE_CHECKING:
    from tarfile import TarFile

# Threads pay off for large files only: for many small ones the GIL hand-offs cost more (measured).
PARALLEL_BYTES = 32 << 20
SMALL_FILE = 1 << 20


def read_ignore(context: Path, flavor: str = "moby") -> IgnoreRules:
    """The context's .dockerignore (bytes as Go reads them: a non-UTF-8 byte stays that byte)."""
    ignore_file = context / ".dockerignore"
    if not ignore_file.is_file():
        return IgnoreRules(flavor=flavor)
    text = ignore_file.read_bytes().decode("utf-8", "surrogateescape")
    return IgnoreRules(text, source=str(ignore_file), flavor=flavor)


def rule_sets(context: Path) -> list[IgnoreRules]:
    """The .dockerignore as docker reads it and as buildah does, when they differ: a file either
    sends is an input. A pattern only buildah cannot read (`a(b`) fails buildah's build anyway."""
    moby = read_ignore(context)
    try:
        buildah = read_ignore(context, "buildah")
    except ConfigError:
        return [moby]
    differ = any(set(p.text) & set("+()|{}") for p in buildah.patterns)
    return [moby, buildah] if differ else [moby]


class ContextFile(NamedTuple):  # a tuple: 50k of them are made per hash of a large context
    rel: str  # POSIX path below the context (a non-UTF-8 name in surrogateescape, as os gives it)
    path: str
    mode: int
    size: int
    symlink: bool


_SPECIAL = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a UNIX socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def _entry(entry: os.DirEntry, rel: str) -> ContextFile:
    st = entry.stat(follow_symlinks=False)
    kind = _SPECIAL.get(stat.S_IFMT(st.st_mode))
    if kind:
        raise ConfigError(
            f"{entry.path}: {kind} in the build context; builders cannot copy it "
            "(move it out of the context or add it to .dockerignore)"
        )
    return ContextFile(rel, entry.path, st.st_mode, st.st_size, stat.S_ISLNK(st.st_mode))


def _walk(context: Path, builder: str | None = None) -> list[ContextFile]:
    """One scandir pass, one lstat per entry, symlinks (to files or folders) kept as links.
    builder None: every file a builder may send (docker's and buildah's reading; an ignored folder
    entered for any exception that may lead into it, as BuildKit does); "buildah": what buildah
    sends (it enters an ignored folder only for an exception naming a path below it)."""
    sets = [read_ignore(context, builder)] if builder else rule_sets(context)
    found: list[ContextFile] = []
    stack: list[_Folder] = [("", str(context), [[False] * len(r.patterns) for r in sets])]
    while stack:
        folders, files = _scan(sets, stack.pop(), superset=not builder)
        stack += folders
        found += files
    found.sort(key=lambda f: f.rel)
    return found


_Folder = tuple[str, str, list[list[bool]]]  # (rel path + "/", absolute path, each rule set's hits)


def _scan(
    sets: list[IgnoreRules], folder: _Folder, superset: bool
) -> tuple[list[_Folder], list[ContextFile]]:
    """One folder: the folders below it to enter, and the files a builder sends."""
    rel_dir, abs_dir, inherited = folder
    folders: list[_Folder] = []
    files: list[ContextFile] = []
    pairs = list(zip(sets, inherited, strict=True))
    with os.scandir(abs_dir) as entries:
        for entry in entries:
            rel = rel_dir + entry.name
            if not entry.is_dir(follow_symlinks=False):
                # A file needs only the verdict; most contexts have one rule set (no differing syntax).
                if any(not r.excluded_below(rel, h) for r, h in pairs):
                    files.append(_entry(entry, rel))
                continue
            hits = [r.hits(rel, h) for r, h in pairs]
            sent = any(not r.verdict(h) for r, h in zip(sets, hits, strict=True))
            if sent or any(r.enter_excluded_dir(rel, superset=superset) for r in sets):
                folders.append((rel + "/", entry.path, hits))
    return folders, files


def context_files(context: Path, builder: str | None = None) -> list[str]:
    """Relative POSIX paths of the files a build would send, sorted: by any builder (None: what
    the digest covers and the kaniko tarball holds, kaniko applying .dockerignore itself again),
    or by "buildah" exactly."""
    return [f.rel for f in _walk(context, builder)]


def _file_digest(path: Path | str, symlink: bool | None = None) -> str:
    if symlink if symlink is not None else os.path.islink(path):
        return hashlib.sha256(b"symlink:" + os.fsencode(os.readlink(path))).hexdigest()
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
    if f.symlink or f.size > SMALL_FILE:
        digest = _file_digest(f.path, f.symlink)
    else:
        digest = _small_digest(f.path, f.size)
    flag = "x" if f.mode & 0o111 and not f.symlink else "-"
    # One encode per file: utf-8 + surrogateescape is what os.fsencode does for the name on POSIX.
    return f"file {f.rel} {flag} {digest}\n".encode("utf-8", "surrogateescape")


def input_digest(
    context: Path,
    dockerfile: Path,
    build_args: Mapping[str, str],
    target: str | None,
    platforms: Iterable[str],
    secret_ids: Iterable[str] = (),
) -> str:
    """sha256 over everything that decides the image's content, in a stable order. Build secrets
    count by id only (a rotated token does not rebuild); a cache mount's content is no input."""
    files = _walk(context)  # a file any builder may copy counts
    h = hashlib.sha256()
    if sum(f.size for f in files) >= PARALLEL_BYTES:  # reads and hashlib release the GIL
        import concurrent.futures as cf  # 20 ms of imports a small context never needs

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
    if secret_ids:  # only then: images without secrets keep the digests they had
        meta["secrets"] = sorted(secret_ids)
    h.update(json.dumps(meta, sort_keys=True).encode())
    return "sha256:" + h.hexdigest()


def _tar_entry(tar: TarFile, path: Path, name: str) -> None:
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
    import gzip  # kaniko only: not imported by every plan
    import io
    import tarfile

    buf = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for rel in context_files(context):
            _tar_entry(tar, context / rel, f"context/{rel}")
        _tar_entry(tar, dockerfile, "Dockerfile")
    return buf.getvalue()
