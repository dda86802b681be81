"""System packages the pipeline and its tests need, installed with apt-get by `invoke setup`."""

from __future__ import annotations

import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from moltbuild.errors import ToolMissingError
from moltbuild.system.processes import Runner


@dataclass(frozen=True)
class Package:
    why: str
    tests: bool = False  # only the tests and `nox -s pipeline`'s embedded registry: `setup --tests`
    provided_by: str = ""  # a command that serves the same purpose when another package installed it


# Debian/Ubuntu package -> what needs it. A build job (a CI runner, a devpod) gets the first group
# only: an apt-get of docker.io next to a runner's docker-ce fails on containerd, and python3.11 is
# not in every release's archive.
PACKAGES = {
    "buildah": Package("daemonless builds (the devpod backend)"),
    "skopeo": Package("inspecting images in registries"),
    "fuse-overlayfs": Package("overlay storage for buildah on nested overlay"),
    "podman": Package("the smoke check runs built images (buildah's storage) before they are pushed"),
    "git": Package("the tag plan reads HEAD"),
    "docker-registry": Package("the embedded registry of `nox -s pipeline` and the tests", tests=True),
    "docker.io": Package("the docker backend's tests (dockerd + CLI)", tests=True, provided_by="dockerd"),
    "busybox-static": Package("offline base images for the tests", tests=True),
    "python3.11": Package("the offline python base image stand-in for the tests", tests=True),
    "apache2-utils": Package("htpasswd for registry basic-auth tests", tests=True),
    "openssl": Package("test TLS certificates", tests=True),
}


def wanted(*, tests: bool) -> list[str]:
    """What `invoke setup` installs: what building needs, and with `tests` what the tests use."""
    return [name for name, pkg in PACKAGES.items() if tests or not pkg.tests]


# The Go-built tools (kustomize, syft, cosign) are pinned in go-tools.lock.toml (system/toollock.py)
# and made ready by system/gotools.py.


def is_debian_like(root: Path = Path("/")) -> bool:
    try:
        text = (root / "etc/os-release").read_text()
    except OSError:
        return False
    ids = {
        line.split("=", 1)[1].strip().strip('"')
        for line in text.splitlines()
        if line.startswith(("ID=", "ID_LIKE="))
    }
    return any(word in ("debian", "ubuntu") for value in ids for word in value.split())


def missing_packages(runner: Runner, packages: list[str]) -> list[str]:
    res = runner.run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *packages], mutates=False, check=False
    )
    installed = {line.split()[0] for line in res.stdout.splitlines() if line.endswith(" installed")}
    return [p for p in packages if p not in installed and not _provided(runner, p)]


def _provided(runner: Runner, name: str) -> bool:
    command = PACKAGES[name].provided_by if name in PACKAGES else ""
    return bool(command) and shutil.which(command, path=runner.environ.get("PATH")) is not None


def install_command(packages: list[str]) -> str:
    return f"apt-get update && apt-get install -y --no-install-recommends {shlex.join(packages)}"


def setup(
    runner: Runner, *, packages: list[str] | None = None, tests: bool = False, root: Path = Path("/")
) -> list[str]:
    """Install what is missing; returns what was installed. Idempotent and fast when done."""
    packages = packages or wanted(tests=tests)
    if not is_debian_like(root):
        raise ToolMissingError(
            "automatic setup supports Debian/Ubuntu only; install these with your package "
            f"manager: {' '.join(packages)}"
        )
    missing = missing_packages(runner, packages)
    if not missing:
        runner.say(f"setup: all {len(packages)} system packages present")
        return []
    sudo = [] if os.geteuid() == 0 else _sudo(runner)
    if sudo is None:
        raise ToolMissingError(
            f"missing system packages and no password-less sudo; run as root: {install_command(missing)}"
        )
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    runner.say(f"setup: installing {' '.join(missing)}" + (" (through sudo -n)" if sudo else ""))
    # sudo drops the environment; apt-get reads DEBIAN_FRONTEND, so it goes in as an argument
    apt = [*sudo, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"] if sudo else ["apt-get"]
    runner.run([*apt, "update", "-qq"], env=env, timeout=600, what="apt-get update")
    runner.run(
        [*apt, "install", "-y", "-qq", "--no-install-recommends", *missing],
        env=env,
        timeout=1200,
        what="apt-get install",
    )
    return missing


def _sudo(runner: Runner) -> list[str] | None:
    """["sudo", "-n"] when sudo works without a password (GitHub's runners), else None."""
    if not shutil.which("sudo"):
        return None
    res = runner.run(["sudo", "-n", "true"], mutates=False, check=False, timeout=15)
    return ["sudo", "-n"] if res.ok else None
