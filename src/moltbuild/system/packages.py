"""System tools the pipeline and its tests need, installed by `invoke setup`."""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
from pathlib import Path

from moltbuild.errors import ToolMissingError
from moltbuild.system.processes import Runner

# Debian/Ubuntu package -> what needs it.
PACKAGES = {
    "buildah": "daemonless builds (the devpod backend)",
    "skopeo": "inspecting images in registries",
    "fuse-overlayfs": "overlay storage for buildah on nested overlay",
    "docker-registry": "the embedded registry of `nox -s pipeline` and the tests",
    "docker.io": "the docker backend (dockerd + CLI)",
    "podman": "the smoke check runs built images (buildah's storage) before they are pushed",
    "busybox-static": "offline base images for the tests",
    "python3.11": "the offline python base image stand-in for the tests",
    "apache2-utils": "htpasswd for registry basic-auth tests",
    "git": "the tag plan reads HEAD",
    "openssl": "test TLS certificates",
}


# Tools built from their Go modules at pinned versions (`go install`), where no Debian package
# has them: name -> (module, version, what needs it).
GO_TOOLS = {
    "kustomize": (
        "sigs.k8s.io/kustomize/kustomize/v5",
        "v5.7.1",
        "renders k8s/ as Kubernetes does (patches, overlays) for the smoke check",
    ),
    "syft": ("github.com/anchore/syft/cmd/syft", "v1.57.1", "the SBOM of every pushed image"),
    "cosign": (
        "github.com/sigstore/cosign/v2/cmd/cosign",
        "v2.6.5",
        "signs pushed images and attaches their SBOM and SLSA provenance",
    ),
}


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
    return [p for p in packages if p not in installed]


def install_command(packages: list[str]) -> str:
    return f"apt-get update && apt-get install -y --no-install-recommends {shlex.join(packages)}"


def setup(runner: Runner, *, packages: list[str] | None = None, root: Path = Path("/")) -> list[str]:
    """Install what is missing; returns what was installed. Idempotent and fast when done."""
    packages = packages or list(PACKAGES)
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


def go_tools_dir() -> Path:
    """Where built Go tools go: on PATH everywhere for root, else the user's ~/.local/bin."""
    return Path("/usr/local/bin") if os.geteuid() == 0 else Path.home() / ".local" / "bin"


def setup_go_tools(runner: Runner, bindir: Path | None = None) -> list[str]:
    """Build each Go tool missing at its pinned version (once per machine: Go caches the build)."""
    bindir = bindir or go_tools_dir()
    built = []
    for name, (module, version, _why) in GO_TOOLS.items():
        if _has_version(runner, bindir / name, version):
            continue
        if not shutil.which("go", path=runner.environ.get("PATH")):
            runner.say(f"setup: {name} {version} not built: no `go` on PATH (install Go 1.22 or newer)")
            continue
        runner.say(f"setup: building {name} {version} from {module} (once per machine)")
        if runner.dry_run:
            runner.run(["go", "install", f"{module}@{version}"], env={"GOBIN": str(bindir)})
            continue
        with tempfile.TemporaryDirectory(prefix="moltbuild-go-") as tmp:
            runner.run(
                ["go", "install", f"{module}@{version}"],
                env={"GOBIN": tmp},
                timeout=1800,
                what=f"go install {name}",
            )
            bindir.mkdir(parents=True, exist_ok=True)
            shutil.move(str(Path(tmp) / name), bindir / f".{name}.new")
            os.replace(bindir / f".{name}.new", bindir / name)  # never a half-copied binary on PATH
        built.append(name)
    return built


def _has_version(runner: Runner, binary: Path, version: str) -> bool:
    """The module version Go stamped into the binary (`go version -m`): some tools print none of
    their own when built with `go install`. Without go, what `NAME version` prints."""
    if not binary.is_file():
        return False
    if shutil.which("go", path=runner.environ.get("PATH")):
        res = runner.run(["go", "version", "-m", str(binary)], mutates=False, check=False, timeout=30)
        stamped = [line.split() for line in res.stdout.splitlines() if line.strip().startswith("mod")]
        return res.ok and any(len(f) >= 3 and f[2] == version for f in stamped)
    res = runner.run([str(binary), "version"], mutates=False, check=False, timeout=30)
    return res.ok and version in res.stdout


def _sudo(runner: Runner) -> list[str] | None:
    """["sudo", "-n"] when sudo works without a password (GitHub's runners), else None."""
    if not shutil.which("sudo"):
        return None
    res = runner.run(["sudo", "-n", "true"], mutates=False, check=False, timeout=15)
    return ["sudo", "-n"] if res.ok else None
