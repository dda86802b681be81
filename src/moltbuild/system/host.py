"""Where am I, and what really works here? Everything reads an injected environ and root."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from moltbuild.settings import ci_platform

DEVPOD_VARS = (
    "DEVPOD",
    "DEVPOD_WORKSPACE_ID",
    "REMOTE_CONTAINERS",
    "DEVCONTAINER",
    "CODESPACES",
    "GITPOD_WORKSPACE_ID",
)
CONTAINER_CGROUP_MARKERS = ("docker", "kubepods", "containerd", "libpod", "lxc", "crio")
SA_TOKEN = "var/run/secrets/kubernetes.io/serviceaccount/token"
NESTING_FSTYPES = {"overlay", "aufs", "fuse.fuse-overlayfs"}


@dataclass
class Place:
    container: bool
    kubernetes: bool
    devpod: bool
    ci: str | None  # "github-actions", "ci" or None
    evidence: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        if self.ci:
            return f"CI ({self.ci})"
        if self.devpod:
            return "devpod"
        if self.kubernetes:
            return "Kubernetes pod"
        return "container" if self.container else "host (laptop or VM)"


def _container_evidence(environ: Mapping[str, str], root: Path) -> list[str]:
    evidence: list[str] = []
    for marker in (".dockerenv", "run/.containerenv"):
        if (root / marker).exists():
            evidence.append(f"/{marker} exists")
    try:
        cgroup = (root / "proc/1/cgroup").read_text(errors="replace")
    except OSError:
        cgroup = ""
    hits = [m for m in CONTAINER_CGROUP_MARKERS if m in cgroup]
    if hits:
        evidence.append(f"/proc/1/cgroup mentions {hits[0]}")
    if environ.get("container"):
        evidence.append(f"container={environ['container']}")
    return evidence


def detect_place(environ: Mapping[str, str], root: Path = Path("/"), *, ci: str | None = None) -> Place:
    """Container, Kubernetes, devpod, CI: `ci` is the settings' answer (`Settings.ci`); without
    it, the same rule on `environ`."""
    evidence = _container_evidence(environ, root)
    kube = []
    if environ.get("KUBERNETES_SERVICE_HOST"):
        kube.append("KUBERNETES_SERVICE_HOST is set")
    if (root / SA_TOKEN).exists():
        kube.append("a service-account token is mounted")
    devpod = [v for v in DEVPOD_VARS if environ.get(v)]

    ci = ci or ci_platform(environ)
    return Place(
        container=bool(evidence) or bool(kube),
        kubernetes=bool(kube),
        devpod=bool(devpod),
        ci=ci,
        evidence=evidence + kube + [f"{v} is set" for v in devpod] + ([f"CI={ci}"] if ci else []),
    )


def default_storage_root(environ: Mapping[str, str], euid: int | None = None) -> Path:
    """buildah's own graphroot default."""
    euid = os.geteuid() if euid is None else euid
    if euid == 0:
        return Path("/var/lib/containers/storage")
    data = environ.get("XDG_DATA_HOME") or str(Path(environ.get("HOME", "~")).expanduser() / ".local/share")
    return Path(data) / "containers/storage"


def _unescape(field_: str) -> str:
    return field_.encode().decode("unicode_escape") if "\\" in field_ else field_


def mount_of(path: Path, mountinfo: str) -> tuple[str, str]:
    """(mount point, fstype) of the mount holding `path`, from /proc/self/mountinfo text."""
    best = ("/", "unknown")
    target = str(path)
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        if len(fields) < 5:
            continue
        point, fstype = _unescape(fields[4]), right.split()[0]
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[0]):
            best = (point, fstype)
    return best


def existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


@dataclass
class StorageVerdict:
    path: str
    mount_point: str
    fstype: str
    overlay_ok: bool
    nested: bool
    method: str  # "mount" (really tried) or "fstype"
    detail: str
    fuse_overlayfs: str | None

    @property
    def buildah_driver(self) -> str:
        return "overlay" if (self.overlay_ok or self.fuse_overlayfs) else "vfs"

    @property
    def driver_label(self) -> str:
        if self.overlay_ok:
            return "overlay"
        return "overlay via fuse-overlayfs" if self.fuse_overlayfs else "vfs"

    def to_dict(self) -> dict:
        return {**asdict(self), "buildah_driver": self.driver_label}


def probe_storage(
    path: Path,
    *,
    root: Path = Path("/"),
    euid: int | None = None,
    fuse_path: str | None = None,
) -> StorageVerdict:
    """Can an overlay be mounted with its upperdir at `path`? Tried for real as root."""
    euid = os.geteuid() if euid is None else euid
    fuse = shutil.which("fuse-overlayfs", path=fuse_path)
    try:
        mountinfo = (root / "proc/self/mountinfo").read_text()
    except OSError:
        mountinfo = ""
    real = root == Path("/")
    target = path.resolve() if real else Path(os.path.normpath(path))
    point, fstype = mount_of(target, mountinfo)
    by_type_nested = fstype in NESTING_FSTYPES
    verdict = dict(path=str(path), mount_point=point, fstype=fstype, fuse_overlayfs=fuse)
    if euid == 0 and real:
        tried = _try_overlay_mount(existing_ancestor(target))
        if tried is not None:
            ok, detail = tried
            return StorageVerdict(
                **verdict, overlay_ok=ok, nested=not ok and "EINVAL" in detail, method="mount", detail=detail
            )
    if by_type_nested:
        detail = f"{point} is {fstype}: an overlay upperdir cannot live there (nested overlay)"
    else:
        detail = f"{point} is {fstype}: overlay upperdir supported"
    return StorageVerdict(
        **verdict, overlay_ok=not by_type_nested, nested=by_type_nested, method="fstype", detail=detail
    )


def _mount_overlay(opts: str, target: Path) -> int:
    """mount(2) directly, for the exact errno (mount(8) turns EINVAL into prose)."""
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.mount(b"overlay", str(target).encode(), b"overlay", 0, opts.encode())
    if rc != 0:
        return ctypes.get_errno()
    libc.umount2(str(target).encode(), 0)
    return 0


def _try_overlay_mount(anchor: Path) -> tuple[bool, str] | None:
    """Mount a throwaway overlay under `anchor`. None when mounting is not possible at all
    (no permission), so the caller falls back to the filesystem type."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".moltbuild-probe-", dir=anchor))
    except OSError:
        return None
    try:
        dirs = {n: tmp / n for n in ("lower", "upper", "work", "merged")}
        for d in dirs.values():
            d.mkdir()
        opts = f"lowerdir={dirs['lower']},upperdir={dirs['upper']},workdir={dirs['work']}"
        err = _mount_overlay(opts, dirs["merged"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if err == 0:
        return True, f"a test overlay mounted and unmounted under {anchor}"
    if err in (errno.EPERM, errno.EACCES):
        return None
    if err == errno.EINVAL:
        return False, (
            f"overlay mount with upperdir under {anchor} fails with EINVAL (Invalid argument): nested overlay"
        )
    return False, f"overlay mount under {anchor} fails: {os.strerror(err)}"
