"""Copying files into a running container as `kubectl cp` does: a tar stream on the stdin of
`tar -x` run in the container by exec. The container needs `sh`, `head` and `tar` (busybox has
them); without them, or when the files cannot be written, the copy says so instead of raising."""

from __future__ import annotations

import io
import shlex
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from moltbuild.k8s.cluster import Cluster, ClusterError

_TIMEOUT_S = 30


def tarball(files: Sequence[tuple[Path, str]]) -> bytes:
    """A tar stream of FILES (host path, absolute path in the container), owned by root, mtime now."""
    out = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for host, dest in files:
            target = PurePosixPath(dest)
            if not target.is_absolute() or ".." in target.parts:
                raise ValueError(f"{dest}: a container path must be absolute, without `..`")
            data = host.read_bytes()
            info = tarfile.TarInfo(str(target.relative_to("/")))
            info.size, info.mtime, info.mode = len(data), now, host.stat().st_mode & 0o777
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def copy_command(size: int) -> list[str]:
    """Reads exactly SIZE bytes (closing stdin needs a protocol older API servers lack), unpacks at /."""
    return ["sh", "-c", f"head -c {shlex.quote(str(size))} | tar -xf - -C /"]


def copy_into(cluster: Cluster, pod: str, container: str, files: Sequence[tuple[Path, str]]) -> str:
    """Copy FILES into the container; "" when done, else why not (one line)."""
    data = tarball(files)
    try:
        code, output = cluster.exec_stdin(pod, container, copy_command(len(data)), data, _TIMEOUT_S)
    except ClusterError as exc:
        return exc.message
    if code != 0:
        said = " ".join(output.split())[:300] or f"exit code {code}"
        return f"tar in {pod}/{container} failed: {said}"
    return ""
