"""Real parts for integration tests: registries on 127.0.0.1, offline base images, a dockerd."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from moltbuild.backends.buildah import storage_flags
from moltbuild.registry.client import ACCEPT
from moltbuild.registry.local import LocalRegistry
from moltbuild.system.processes import Runner
from tests.conftest import ROOT, need_root, need_tool
from tests.support import offline_bases
from tests.support.registries import TLSFiles

SECRET_PREFIXES = ("MOLTBUILD_", "GITHUB_", "REGISTRY_", "DOCKER_HOST")


@pytest.fixture(scope="session")
def build_tools() -> None:
    need_root()
    need_tool("buildah", "docker-registry", "git", "fuse-overlayfs")


@pytest.fixture(scope="session")
def mirror(build_tools, tmp_path_factory) -> Iterator[LocalRegistry]:
    """A plain registry holding the offline stand-ins under mirror/library/... (also a push target)."""
    base = tmp_path_factory.mktemp("mirror")
    registry = LocalRegistry(base / "registry", Runner(environ=os.environ)).start()
    offline_bases.build_and_push(f"{registry.host}/mirror", storage_root=base / "bases-storage")
    yield registry
    registry.stop()


def release_storage(root: Path, driver: str = "overlay", storage_opt: str | None = None) -> None:
    """Remove buildah's containers and images under `root` and the mounts it leaves behind."""
    flags = [*storage_flags(root), "--storage-driver", driver]
    if storage_opt:
        flags += ["--storage-opt", storage_opt]
    subprocess.run(["buildah", *flags, "rm", "--all"], capture_output=True)
    subprocess.run(["buildah", *flags, "rmi", "--all", "--force"], capture_output=True)
    libc = ctypes.CDLL(None, use_errno=True)
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for point in sorted((p for p in points if p.startswith(str(root))), key=len, reverse=True):
        libc.umount2(point.encode(), 2)  # MNT_DETACH


@pytest.fixture(scope="session")
def storage_root(build_tools, tmp_path_factory) -> Iterator[Path]:
    """One buildah graphroot on plain disk for the session: later builds reuse pulled bases."""
    root = tmp_path_factory.mktemp("buildah") / "storage"
    yield root
    release_storage(root)


@pytest.fixture()
def git_project(project: Path) -> Path:
    """The project copy as a git checkout on main with one commit."""
    git = ["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    (project / ".gitignore").write_text((ROOT / ".gitignore").read_text())
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "test"], check=True)
    return project


def head_short(project: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(project), "rev-parse", "--short=7", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(SECRET_PREFIXES)}
    # SBOM, provenance and signatures have their own tests (test_supply_chain); elsewhere they
    # would only add a syft scan and cosign calls to every push.
    env["MOLTBUILD_ATTEST"] = "off"
    env.update(extra)
    return env


def build_env(mirror: LocalRegistry, storage_root: Path, namespace: str, **extra: str) -> dict[str, str]:
    defaults = {
        "MOLTBUILD_REGISTRY": f"{mirror.host}/{namespace}",
        "MOLTBUILD_INSECURE_REGISTRIES": mirror.host,
        "MOLTBUILD_BASE_MIRROR": f"{mirror.host}/mirror",
        "MOLTBUILD_STORAGE_ROOT": str(storage_root),
    }
    return clean_env(**{**defaults, **extra})


def push_env(
    mirror: LocalRegistry, storage_root: Path, target: LocalRegistry, **extra: str
) -> dict[str, str]:
    """Bases from the mirror, images pushed to another plain-HTTP registry on loopback."""
    return build_env(
        mirror,
        storage_root,
        "unused",
        MOLTBUILD_REGISTRY=f"{target.host}/ardenone",
        MOLTBUILD_INSECURE_REGISTRIES=f"{mirror.host},{target.host}",
        **extra,
    )


def invoke(
    project: Path, *args: str, env: dict[str, str], timeout: float = 600, **popen
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


def run_in_image(
    storage_root: Path, ref: str, argv: list[str], *, user: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run `argv` in a container of the built image `ref` (buildah, chroot isolation), then remove it."""
    flags = [*storage_flags(storage_root), "--storage-driver", "overlay"]
    ctr = subprocess.run(
        ["buildah", *flags, "from", "--pull-never", ref], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        as_user = ["--user", user] if user else []
        return subprocess.run(
            ["buildah", *flags, "run", "--isolation", "chroot", *as_user, ctr, "--", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    finally:
        subprocess.run(["buildah", *flags, "rm", ctr], capture_output=True)


def spy_on(tool: str, tmp_path: Path) -> tuple[str, Path]:
    """A recording wrapper first on PATH: (the PATH to use, the file each call's argv goes to)."""
    bindir = tmp_path / f"spy-{tool}"
    bindir.mkdir()
    calls = tmp_path / f"{tool}.calls"
    real = shutil.which(tool)
    wrapper = bindir / tool
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    return f"{bindir}:{os.environ['PATH']}", calls


def spied_calls(calls: Path) -> list[list[str]]:
    return [line.split() for line in calls.read_text().splitlines()] if calls.exists() else []


def read_report(project: Path) -> dict[str, dict]:
    data = json.loads((project / "build" / "images.json").read_text())
    assert data["version"] == 1
    return {e["name"]: e for e in data["images"]}


def registry_digest(url: str, name: str, tag: str, **kw) -> str | None:
    resp = requests.head(f"{url}/v2/{name}/manifests/{tag}", headers={"Accept": ACCEPT}, timeout=10, **kw)
    if resp.status_code == 404:
        return None
    resp.raise_for_status()
    return resp.headers["Docker-Content-Digest"]


def registry_labels(url: str, name: str, tag: str, **kw) -> dict[str, str]:
    manifest = requests.get(
        f"{url}/v2/{name}/manifests/{tag}", headers={"Accept": ACCEPT}, timeout=10, **kw
    ).json()
    config = requests.get(f"{url}/v2/{name}/blobs/{manifest['config']['digest']}", timeout=10, **kw).json()
    return config["config"].get("Labels") or {}


def assert_report_matches_registry(project: Path, url: str, names: set[str], **kw) -> dict[str, dict]:
    entries = read_report(project)
    assert set(entries) == names
    for entry in entries.values():
        assert entry["pushed"] is True and entry["digest"].startswith("sha256:")
        name = entry["repository"].split("/", 1)[1]
        for tag in entry["tags"]:
            assert registry_digest(url, name, tag, **kw) == entry["digest"], f"{name}:{tag}"
    return entries


# -- TLS and basic auth --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory) -> TLSFiles:
    import trustme

    base = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(base / "server.key"))
    cert.cert_chain_pems[0].write_to_path(str(base / "server.crt"))
    ca.cert_pem.write_to_path(str(base / "ca.crt"))
    return TLSFiles(cert=base / "server.crt", key=base / "server.key", ca=base / "ca.crt")


def htpasswd_file(path: Path, user: str, password: str) -> Path:
    need_tool("htpasswd")
    # htpasswd reads the password from stdin (-i): it never appears in argv.
    subprocess.run(
        ["htpasswd", "-iBc", str(path), user], input=password, text=True, check=True, capture_output=True
    )
    return path


# -- a real dockerd ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dockerd(build_tools, mirror, tmp_path_factory) -> Iterator[str]:
    need_tool("dockerd", "docker")
    base = Path(f"/tmp/mb-dockerd-{os.getpid()}")  # short: unix socket paths are limited
    base.mkdir(exist_ok=True)
    sock = base / "docker.sock"
    log = (base / "dockerd.log").open("w")
    proc = subprocess.Popen(
        [
            "dockerd",
            "--data-root",
            str(base / "data"),
            "--exec-root",
            str(base / "exec"),
            "--pidfile",
            str(base / "docker.pid"),
            "-H",
            f"unix://{sock}",
            "--insecure-registry",
            mirror.host,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    host = f"unix://{sock}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ok = subprocess.run(["docker", "-H", host, "info"], capture_output=True).returncode == 0
        if ok:
            break
        if proc.poll() is not None:
            pytest.fail(f"dockerd exited: {(base / 'dockerd.log').read_text()[-800:]}")
        time.sleep(0.2)
    else:
        pytest.fail("dockerd did not answer within 60s")
    yield host
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    shutil.rmtree(base, ignore_errors=True)


def leftover_temp_dirs(tmp: Path) -> list[Path]:
    """The run's private temp dirs (auth files) still in `tmp`, and any auth.json below it;
    moltbuild-run-* is buildah's runroot for a long storage path: kept by design, no secret."""
    dirs = [p for p in tmp.glob("moltbuild-*") if not p.name.startswith("moltbuild-run-")]
    return dirs + list(tmp.rglob("auth.json"))


def _default_signals(tree) -> None:
    """In the child: SIGINT as a terminal gives it. A test suite started as a shell's background
    job inherits SIGINT ignored, and an ignored SIGINT never reaches the run under test."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    tree.enter()


def interrupt_when(
    project: Path, args: list[str], env: dict[str, str], tree, ready, sig: int, wait: float = 300
) -> tuple[int, str]:
    """Start `invoke ARGS` in `tree` (a ProcessTree), send `sig` once `ready()` holds; (exit code,
    stderr). `ready` asserts its own condition when the wait runs out."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoke", *args],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: _default_signals(tree),
    )
    try:
        deadline = time.monotonic() + wait
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready(), "the run never reached the point to interrupt"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, err


def run_frozen_when(
    project: Path, args: list[str], env: dict[str, str], reg, tree, log: Path, ready, *, wait: float
) -> tuple[int | None, str, float]:
    """`invoke ARGS` in `tree` (a ProcessTree), output to `log`; SIGSTOP the registry `reg` the moment
    `ready()` holds. Returns (exit code or None if still running after `wait`, output, seconds from
    the freeze to the run's end). The caller sends SIGCONT."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "invoke", *args],
            cwd=project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=tree.enter,
        )
    try:
        deadline = time.monotonic() + 300
        while not ready() and proc.poll() is None:
            assert time.monotonic() < deadline, "the run never reached the point to freeze the registry"
            time.sleep(0.02)
        assert proc.poll() is None, log.read_text()[-3000:]
        os.kill(reg.pid, signal.SIGSTOP)
        frozen = time.monotonic()
        try:
            code = proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            code = None
        return code, log.read_text(), time.monotonic() - frozen
    finally:
        proc.kill()
        proc.wait()
