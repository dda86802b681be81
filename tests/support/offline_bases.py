"""Offline stand-ins for python:3.12-slim and busybox:1.36, built from this machine's binaries
with buildah (RECIPES.md) and pushed under a mirror prefix, because Docker Hub is unreachable.

    python -m tests.support.offline_bases 127.0.0.1:5000/mirror [--insecure]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from moltbuild.backends.buildah import storage_flags

BUSYBOX = "/bin/busybox"
PYTHON = "/usr/bin/python3.11"
STDLIB = Path("/usr/lib/python3.11")
SKIP_STDLIB = {
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "config-3.11-x86_64-linux-gnu",
    "unittest",
    "site-packages",
    "dist-packages",
}
IMAGES = {"busybox": "library/busybox:1.36", "python": "library/python:3.12-slim"}


def sh(*argv: str, **kw) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw).stdout.strip()


def _libs(binaries: list[str]) -> set[str]:
    libs: set[str] = set()
    for binary in binaries:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
        libs |= set(re.findall(r"(/\S+\.so[^\s]*)", out))
    return libs


def _dlopened(names: list[str]) -> set[str]:
    """Libraries loaded at run time, which ldd does not list (glibc dlopens libgcc_s.so.1 for
    pthread_exit: a thread ending without it aborts the interpreter)."""
    cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    found = set()
    for name in names:
        match = re.search(rf"^\s*{re.escape(name)} \(libc6[^)]*\) => (\S+)$", cache, re.M)
        if match:
            found.add(match.group(1))
    return found


def _copy(src: str, root: Path) -> None:
    dest = root / src.lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest, follow_symlinks=True)


def _busybox_rootfs(root: Path) -> None:
    for d in ("bin", "etc", "tmp", "root", "usr/bin", "usr/local/bin", "www"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    sh("chroot", str(root), "/bin/busybox", "--install", "-s", "/bin")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")
    (root / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")


def _python_rootfs(root: Path) -> None:
    _busybox_rootfs(root)
    dynload = sorted(str(p) for p in (STDLIB / "lib-dynload").glob("*.so"))
    for lib in _libs([PYTHON, *dynload]) | _dlopened(["libgcc_s.so.1"]):
        _copy(lib, root)
    _copy(PYTHON, root)
    for entry in STDLIB.iterdir():
        if entry.name in SKIP_STDLIB:
            continue
        dest = root / str(entry).lstrip("/")
        if entry.is_dir():
            shutil.copytree(entry, dest, symlinks=True)
        else:
            _copy(str(entry), root)
    for link in ("usr/bin/python3", "usr/local/bin/python3", "usr/local/bin/python"):
        (root / link).unlink(missing_ok=True)
        (root / link).symlink_to("/usr/bin/python3.11")
    if Path("/etc/ssl/certs/ca-certificates.crt").exists():
        _copy("/etc/ssl/certs/ca-certificates.crt", root)


def build_and_push(mirror: str, *, storage_root: Path, insecure: bool = True) -> dict[str, str]:
    """Build both stand-ins and push them as MIRROR/library/...; returns {name: ref}."""
    gflags = [*storage_flags(storage_root), "--storage-driver", "vfs"]
    refs = {}
    for name, path in IMAGES.items():
        ref = f"{mirror.rstrip('/')}/{path}"
        ctr = sh("buildah", *gflags, "from", "scratch")
        try:
            with tempfile.TemporaryDirectory() as tmp:
                rootfs = Path(tmp) / "rootfs"
                (_python_rootfs if name == "python" else _busybox_rootfs)(rootfs)
                sh("buildah", *gflags, "copy", ctr, f"{rootfs}/.", "/")
            sh(
                "buildah",
                *gflags,
                "config",
                "--cmd",
                "/bin/sh" if name == "busybox" else "python3",
                "--env",
                "PATH=/usr/local/bin:/usr/bin:/bin",
                ctr,
            )
            sh("buildah", *gflags, "commit", "--format", "docker", ctr, ref)
        finally:
            subprocess.run(["buildah", *gflags, "rm", ctr], capture_output=True)
        sh(
            "buildah",
            *gflags,
            "push",
            f"--tls-verify={'false' if insecure else 'true'}",
            ref,
            f"docker://{ref}",
        )
        refs[name] = ref
    refs["busybox-multi"] = _push_multi_arch_busybox(mirror, gflags, insecure)
    return refs


def _push_multi_arch_busybox(mirror: str, gflags: list[str], insecure: bool) -> str:
    """busybox:1.36-multi, an index for linux/amd64 and linux/arm64. Both carry this machine's
    amd64 busybox (no arm64 binaries offline); the arm64 one differs in its config's architecture,
    which is what a multi-platform build and push must keep apart."""
    ref = f"{mirror.rstrip('/')}/library/busybox:1.36-multi"
    local = "localhost/busybox-multi"
    sh("buildah", *gflags, "manifest", "create", local)
    for arch in ("amd64", "arm64"):
        ctr = sh("buildah", *gflags, "from", "scratch")
        try:
            with tempfile.TemporaryDirectory() as tmp:
                rootfs = Path(tmp) / "rootfs"
                _busybox_rootfs(rootfs)
                sh("buildah", *gflags, "copy", ctr, f"{rootfs}/.", "/")
            sh("buildah", *gflags, "config", "--arch", arch, "--os", "linux", "--cmd", "/bin/sh", ctr)
            sh("buildah", *gflags, "commit", "--format", "docker", ctr, f"{local}-{arch}")
        finally:
            subprocess.run(["buildah", *gflags, "rm", ctr], capture_output=True)
        sh(
            "buildah",
            *gflags,
            "manifest",
            "add",
            "--arch",
            arch,
            "--os",
            "linux",
            local,
            f"containers-storage:{local}-{arch}",
        )
    sh(
        "buildah",
        *gflags,
        "manifest",
        "push",
        "--all",
        f"--tls-verify={'false' if insecure else 'true'}",
        local,
        f"docker://{ref}",
    )
    return ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mirror", help="HOST:PORT/PREFIX, e.g. 127.0.0.1:5000/mirror")
    parser.add_argument("--secure", action="store_true", help="push over HTTPS")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (chroot, buildah storage)")
    with tempfile.TemporaryDirectory(prefix="offline-bases-") as tmp:
        for name, ref in build_and_push(
            args.mirror, storage_root=Path(tmp) / "storage", insecure=not args.secure
        ).items():
            print(f"{name}: {ref}")


if __name__ == "__main__":
    main()
