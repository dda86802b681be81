"""Whether the release check can run here, and with which OCI runtime: the refusal of a push when
no container runtime is installed (and the report's word when the check is turned off), the one
fallback from an OCI runtime that cannot start a container on this host to the other one podman
has (crun cannot on hosts with hybrid cgroups, runc can), and the line `invoke doctor` shows."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moltbuild.errors import CommandError, ConfigError

if TYPE_CHECKING:
    from moltbuild.settings import Settings
    from moltbuild.smoke.runtime import ContainerRuntime

Which = Callable[[str], str | None]

OFF = "skipped: MOLTBUILD_SMOKE=off"
NO_SMOKE = "skipped: --no-smoke"
_OTHER = {"crun": "runc", "runc": "crun"}
_NAMED = re.compile(r"\b(crun|runc)\b")
# The runtime itself failed (cgroups, namespaces), not the image: its command missing is the app's.
_RUNTIME = re.compile(r"OCI runtime error|OCI runtime create failed|cgroups? .*not supported", re.I)
_APP = re.compile(r"executable file .*not found|not found in \$PATH|no such file or directory", re.I)


def skipped(settings: Settings) -> str:
    """What the report says of an image whose check was turned off."""
    return OFF if not settings.flag("MOLTBUILD_SMOKE") else NO_SMOKE


def require_runtime(tool: str, images: Iterable[Any], *, which: Which | None = None) -> None:
    """Before a push builds anything: an image the check would run needs `tool` (podman or
    docker); without it the push is refused, never pushed unchecked."""
    checked = [img.name for img in images if img.smoke is not None and not img.multi_platform]
    if checked and not (which or shutil.which)(tool):
        raise ConfigError(
            f"the release check runs each image before the push, and {tool} is not installed "
            f"({', '.join(checked)}): install it (`invoke setup`), or pass --no-smoke / set "
            "MOLTBUILD_SMOKE=off to push unchecked"
        )


def cannot_start(exc: CommandError) -> bool:
    """The OCI runtime could not start any container here (not a fault of the image)."""
    return bool(_RUNTIME.search(exc.tail)) and not _APP.search(exc.tail)


def fallback(rt: ContainerRuntime, exc: CommandError) -> str:
    """The other OCI runtime podman has, to try once after `exc` ('' when there is none)."""
    if Path(rt.argv[0]).name != "podman" or "--runtime" in rt.argv or not cannot_start(exc):
        return ""
    failed = _NAMED.search(exc.tail)
    other = _OTHER.get(failed.group(1) if failed else configured(rt))
    return other if other and shutil.which(other) else ""


def configured(rt: ContainerRuntime) -> str:
    """The OCI runtime podman uses by default here ('' when podman cannot say)."""
    res = rt("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False, timeout=60, mutates=False)
    return res.stdout.strip() if res.ok else ""


def hybrid_cgroups(root: Path = Path("/sys/fs/cgroup")) -> bool:
    """cgroup v1 controllers with the unified v2 hierarchy beside them, which crun refuses."""
    return (root / "unified").is_dir() and not (root / "cgroup.controllers").exists()


def doctor_line(rt: ContainerRuntime, *, which: Which | None = None, cgroups: Path | None = None) -> str:
    """Which OCI runtime starts the smoke containers here, or why none does (`invoke doctor`)."""
    which = which or shutil.which
    tool = Path(rt.argv[0]).name
    if not which(rt.argv[0]):
        return f"{tool} is not installed: `build --push` is refused (invoke setup, or MOLTBUILD_SMOKE=off)"
    if tool != "podman":
        return f"{tool} runs the smoke containers"
    name = configured(rt) or "its default runtime"
    if name != "crun" or not hybrid_cgroups(cgroups or Path("/sys/fs/cgroup")):
        return f"podman runs the smoke containers with {name}"
    if which("runc"):
        return "podman's crun cannot start containers here (hybrid cgroups): the check uses --runtime runc"
    return "podman's crun cannot start containers here (hybrid cgroups): install runc (apt-get install runc)"
