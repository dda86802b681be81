"""The layer cache in the registry (REPO/cache) with real buildah and a real registry: a fresh,
empty storage reuses the dependency layer a build pushed; a registry that refuses the cache
repository only draws a warning; turned off, nothing is pushed there."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import requests

from moltbuild.registry.client import ACCEPT
from moltbuild.registry.local import LocalRegistry
from moltbuild.system.processes import Runner
from tests.conftest import need
from tests.integration.conftest import (
    build_env,
    invoke,
    push_env,
    read_report,
    release_storage,
    run_frozen_when,
)
from tests.support import proctree
from tests.support.fault_proxy import FaultProxy
from tests.support.proctree import ProcessTree

pytestmark = pytest.mark.integration

# A dependency step before anything that changes per commit, whose layer differs on every run
# (random bytes): an equal layer digest after a rebuild can only come from the cache.
DEPENDENCY_STEP = (
    "COPY requirements.txt /deps/requirements.txt\n"
    "RUN python3 -c \"import os; open('/deps/installed.bin', 'wb').write(os.urandom(65536))\"\n"
)
BUILD = ("build", "--push", "--api-only", "--no-smoke")


def commit_all(project: Path, message: str) -> None:
    git = ["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", message], check=True)


@pytest.fixture()
def dep_project(git_project: Path) -> Path:
    """The api with a dependency-install step right after FROM, committed."""
    dockerfile = git_project / "api" / "Dockerfile"
    text = dockerfile.read_text()
    head, sep, rest = text.partition("FROM python:3.12-slim\n")
    assert sep, "the api Dockerfile no longer starts FROM python:3.12-slim"
    dockerfile.write_text(head + sep + DEPENDENCY_STEP + rest)
    (git_project / "api" / "requirements.txt").write_text("stand-in==1.0\n")
    commit_all(git_project, "api: a dependency step")
    return git_project


def layers_by_step(url: str, name: str, digest: str) -> dict[str, str]:
    """The image's Dockerfile steps (history created_by) -> the digest of the layer each made."""
    manifest = requests.get(f"{url}/v2/{name}/manifests/{digest}", headers={"Accept": ACCEPT}, timeout=10)
    manifest.raise_for_status()
    doc = manifest.json()
    config = requests.get(f"{url}/v2/{name}/blobs/{doc['config']['digest']}", timeout=10).json()
    layers = iter(layer["digest"] for layer in doc["layers"])
    return {h.get("created_by", ""): next(layers) for h in config["history"] if not h.get("empty_layer")}


def step(layers: dict[str, str], needle: str) -> str:
    (digest,) = [d for created_by, d in layers.items() if needle in created_by]
    return digest


def counts(cache: str, namespace: str) -> tuple[int, int]:
    """(layers pulled, layers pushed) from a report's `cache` field."""
    found = re.fullmatch(
        rf"(\d+) layer\(s\) pulled from \S+/{namespace}/moltbook-api/cache, (\d+) pushed", cache
    )
    assert found, cache
    return int(found.group(1)), int(found.group(2))


def tags(url: str, name: str) -> list[str]:
    """The repository's tags over HTTP; [] when the registry has no such repository (404)."""
    resp = requests.get(f"{url}/v2/{name}/tags/list", timeout=10)
    if resp.status_code == 404:
        return []
    resp.raise_for_status()
    return resp.json().get("tags") or []


def assert_refused_only_warned(out, proxy, project: Path, mirror, namespace: str, says: str) -> None:
    """The build succeeded and pushed; the proxy did refuse the cache repository; one warning said
    so; nothing reached the cache repository."""
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    assert any(line.startswith("403 ") and "/cache/" in line for line in proxy.seen)  # it did refuse
    warning = [line for line in out.stderr.splitlines() if "registry layer cache" in line]
    assert warning and says in warning[0] and "403" in warning[0], out.stderr
    assert read_report(project)["api"]["pushed"]
    assert tags(mirror.url, f"{namespace}/moltbook-api")
    assert tags(mirror.url, f"{namespace}/moltbook-api/cache") == []


def test_a_fresh_storage_after_a_one_line_change_reuses_the_dependency_layer_from_the_registry(
    dep_project, mirror, storage_root, tmp_path
):
    env = build_env(mirror, storage_root, "lcache")
    first = invoke(dep_project, *BUILD, env=env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr
    before = read_report(dep_project)["api"]
    assert counts(before["cache"], "lcache")[0] == 0 and counts(before["cache"], "lcache")[1] >= 2
    assert tags(mirror.url, "lcache/moltbook-api/cache")

    app = dep_project / "api" / "moltbook_api" / "app.py"
    app.write_text(app.read_text() + "# one more line\n")
    commit_all(dep_project, "api: a one-line change")
    fresh = tmp_path / "new-runner" / "storage"  # a new machine: nothing local at all
    try:
        second = invoke(dep_project, *BUILD, env={**env, "MOLTBUILD_STORAGE_ROOT": str(fresh)})
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr
    finally:
        release_storage(fresh)
    after = read_report(dep_project)["api"]
    assert after["digest"] != before["digest"]
    log = (dep_project / "build" / "logs" / "api.log").read_text()
    assert "--> Cache pulled from remote" in log and counts(after["cache"], "lcache")[0] >= 2

    old = layers_by_step(mirror.url, "lcache/moltbook-api", before["digest"])
    new = layers_by_step(mirror.url, "lcache/moltbook-api", after["digest"])
    assert step(new, "os.urandom") == step(old, "os.urandom")  # random bytes: only the cache gives these
    assert step(new, "requirements.txt") == step(old, "requirements.txt")
    assert step(new, "/app/moltbook_api/") != step(old, "/app/moltbook_api/")  # the changed source


def one_line_change(project: Path, n: int) -> None:
    app = project / "api" / "moltbook_api" / "app.py"
    app.write_text(app.read_text() + f"# change {n}\n")
    commit_all(project, f"api: change {n}")


def test_entries_pushed_from_a_used_storage_serve_an_empty_one(dep_project, mirror, tmp_path):
    """A developer's storage (the dependency step built at an earlier commit, no cache then)
    pushes entries that a new runner finds; moltbuild's own labels add no entry per label."""
    used = tmp_path / "used" / "storage"
    env = build_env(mirror, used, "lused")
    fresh = tmp_path / "fresh" / "storage"
    try:
        earlier = invoke(dep_project, *BUILD, env={**env, "MOLTBUILD_REGISTRY_CACHE": "0"})
        assert earlier.returncode == 0, earlier.stdout[-3000:] + earlier.stderr
        one_line_change(dep_project, 1)
        first = invoke(dep_project, *BUILD, env=env)  # the dependency step: a local hit
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr
        before = read_report(dep_project)["api"]
        log = (dep_project / "build" / "logs" / "api.log").read_text()
        assert log.count("LABEL") == 2, log  # the Dockerfile's own, and moltbuild's five in one
        one_line_change(dep_project, 2)
        second = invoke(dep_project, *BUILD, env={**env, "MOLTBUILD_STORAGE_ROOT": str(fresh)})
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr
    finally:
        release_storage(used)
        release_storage(fresh)
    after = read_report(dep_project)["api"]
    assert counts(after["cache"], "lused")[0] >= 2, after["cache"]
    old = layers_by_step(mirror.url, "lused/moltbook-api", before["digest"])
    new = layers_by_step(mirror.url, "lused/moltbook-api", after["digest"])
    assert step(new, "os.urandom") == step(old, "os.urandom")  # random bytes: only the cache gives these


def test_a_registry_that_refuses_the_cache_repository_only_warns(dep_project, mirror, storage_root):
    proxy = FaultProxy(mirror.url, refuse=r"^\S+ /v2/lrefused/moltbook-api/cache/").start()
    try:
        # The proxy is on loopback and not listed as insecure: bud reaches it over plain HTTP anyway.
        env = build_env(mirror, storage_root, "unused", MOLTBUILD_REGISTRY=f"{proxy.host}/lrefused")
        out = invoke(dep_project, *BUILD, env=env)
    finally:
        proxy.stop()
    assert_refused_only_warned(out, proxy, dep_project, mirror, "lrefused", "push of cache layers failed")
    assert read_report(dep_project)["api"]["cache"].startswith("not used: push of cache layers failed")


@pytest.mark.parametrize("how", ["--no-cache", ".env.local"])
def test_turned_off_nothing_goes_to_the_cache_repository(how, dep_project, mirror, storage_root):
    namespace = "loff-flag" if how == "--no-cache" else "loff-setting"
    env = build_env(mirror, storage_root, namespace)
    flags: tuple[str, ...] = ()
    if how == "--no-cache":
        flags = ("--no-cache",)
    else:
        (dep_project / ".env.local").write_text("MOLTBUILD_REGISTRY_CACHE=0\n")
    out = invoke(dep_project, *BUILD, *flags, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    why = "--no-cache" if how == "--no-cache" else "MOLTBUILD_REGISTRY_CACHE=0 from .env.local"
    assert why in next(line for line in out.stdout.splitlines() if line.startswith("cache:"))
    entry = read_report(dep_project)["api"]
    assert entry["pushed"] and "cache" not in entry
    assert tags(mirror.url, f"{namespace}/moltbook-api")
    assert tags(mirror.url, f"{namespace}/moltbook-api/cache") == []


def buildkit_cli(tmp_path: Path) -> str:
    """A PATH whose `docker` builds with BuildKit: buildx, or a CLI before 23 with DOCKER_BUILDKIT=1
    (Debian 12's docker.io is 20.10; a newer CLI without buildx only has the classic builder)."""
    for cli in dict.fromkeys(
        c for c in (shutil.which("docker"), "/usr/bin/docker") if c and os.path.exists(c)
    ):
        buildx = subprocess.run([cli, "buildx", "version"], capture_output=True).returncode == 0
        version = subprocess.run(
            [cli, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True
        ).stdout.strip()
        if buildx or (version and int(version.split(".")[0]) < 23):
            bindir = tmp_path / "buildkit-cli"
            bindir.mkdir()
            (bindir / "docker").symlink_to(cli)
            return f"{bindir}:{os.environ['PATH']}"
    need(False, "no docker CLI that builds with BuildKit (buildx, or docker.io 20.10 with DOCKER_BUILDKIT=1)")
    raise AssertionError("unreachable")


def wipe_daemon(dockerd: str, repository: str) -> None:
    """What a new runner's daemon lacks: this repository's images and every BuildKit cache record."""
    docker = ["docker", "-H", dockerd]
    ids = subprocess.run(
        [*docker, "images", "--quiet", "--filter", f"reference={repository}:*"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if ids:
        subprocess.run([*docker, "rmi", "--force", *sorted(set(ids))], capture_output=True, check=True)
    subprocess.run([*docker, "builder", "prune", "--all", "--force"], capture_output=True, check=True)


def test_docker_with_buildkit_keeps_an_inline_cache_in_the_cache_repository(
    dep_project, mirror, storage_root, dockerd, tmp_path
):
    path = buildkit_cli(tmp_path)
    env = build_env(
        mirror,
        storage_root,
        "dcache",
        DOCKER_HOST=dockerd,
        DOCKER_BUILDKIT="1",
        PATH=path,
        MOLTBUILD_BACKEND="docker",
    )
    first = invoke(dep_project, *BUILD, env=env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr
    before = read_report(dep_project)["api"]
    assert before["backend"] == "docker" and before["cache"].endswith("/dcache/moltbook-api/cache:buildkit")
    assert tags(mirror.url, "dcache/moltbook-api/cache") == ["buildkit"]

    wipe_daemon(dockerd, f"{mirror.host}/dcache/moltbook-api")
    app = dep_project / "api" / "moltbook_api" / "app.py"
    app.write_text(app.read_text() + "# one more line\n")
    commit_all(dep_project, "api: a one-line change")
    second = invoke(dep_project, *BUILD, env=env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr
    after = read_report(dep_project)["api"]
    log = (dep_project / "build" / "logs" / "api.log").read_text()
    assert f"importing cache manifest from {mirror.host}/dcache/moltbook-api/cache:buildkit" in log
    old = layers_by_step(mirror.url, "dcache/moltbook-api", before["digest"])
    new = layers_by_step(mirror.url, "dcache/moltbook-api", after["digest"])
    assert step(new, "os.urandom") == step(old, "os.urandom")  # random bytes: only the cache gives these
    assert step(new, "/app/moltbook_api/") != step(old, "/app/moltbook_api/")


def test_docker_a_refused_cache_repository_only_warns(dep_project, mirror, storage_root, dockerd, tmp_path):
    path = buildkit_cli(tmp_path)
    # Readable, not writable: a token without write access to the cache package.
    proxy = FaultProxy(mirror.url, refuse=r"^(POST|PUT|PATCH) /v2/drefused/moltbook-api/cache/").start()
    try:  # dockerd speaks plain HTTP to any 127.0.0.0/8 registry by default
        env = build_env(
            mirror,
            storage_root,
            "unused",
            MOLTBUILD_REGISTRY=f"{proxy.host}/drefused",
            DOCKER_HOST=dockerd,
            DOCKER_BUILDKIT="1",
            PATH=path,
            MOLTBUILD_BACKEND="docker",
        )
        out = invoke(dep_project, *BUILD, env=env)
    finally:
        proxy.stop()
    assert_refused_only_warned(out, proxy, dep_project, mirror, "drefused", "not written")
    assert read_report(dep_project)["api"]["cache"].startswith("not written: ")


def test_a_registry_frozen_during_the_build_costs_the_cache_and_the_run_still_ends(
    dep_project, mirror, storage_root, tmp_path
):
    """buildah puts no timeout on a registry that accepts connections and never answers: frozen
    while `bud` pushes cache layers, the build is cut after 10x MOLTBUILD_IDLE_TIMEOUT of no progress,
    built again without the cache, and the push then fails naming the registry."""
    need(proctree.available(), "needs a cgroup of its own to watch only its process tree (root)")
    idle = 2
    reg = LocalRegistry(tmp_path / "frozen", Runner(environ=os.environ)).start()
    env = push_env(mirror, storage_root, reg, MOLTBUILD_IDLE_TIMEOUT=str(idle), MOLTBUILD_BACKEND="buildah")
    build_log = dep_project / "build" / "logs" / "api.log"
    pushing = lambda: build_log.is_file() and "--> Pushing cache" in build_log.read_text()  # noqa: E731
    try:
        with ProcessTree() as tree:
            code, output, seconds = run_frozen_when(
                dep_project, list(BUILD), env, reg, tree, tmp_path / "run.log", pushing, wait=30 * idle + 60
            )
            assert tree.wait_empty(timeout=5), f"left running: {tree.cmdlines()}"
        assert code not in (None, 0), output[-3000:]  # the image push cannot reach a frozen registry either
        assert "no progress while the registry was in use" in output, output[-3000:]
        assert reg.host in output.splitlines()[-1] or reg.host in output[-1000:], output[-3000:]
        assert seconds < 10 * idle + 40, f"{seconds:.1f}s after the freeze:\n{output[-3000:]}"
    finally:
        if reg.pid:
            os.kill(reg.pid, signal.SIGCONT)
        reg.stop()
