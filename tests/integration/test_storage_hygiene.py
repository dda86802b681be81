"""Storage hygiene with the real tools: checkouts sharing one store keep each other's images, and
what a run killed with SIGKILL leaves (buildah working containers, a smoke container with its
port, a private temp dir with auth.json) goes with the next run or `invoke clean`. Every test
counts only its own storage root, its own temp dir and its own process tree."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from moltbuild.backends.buildah import storage_flags
from tests.conftest import need_tool
from tests.integration.conftest import (
    build_env,
    invoke,
    leftover_temp_dirs,
    read_report,
    release_storage,
)
from tests.support import proctree
from tests.support.proctree import ProcessTree

pytestmark = pytest.mark.integration

NAP = "moltbook_api/nap"  # while this file is in the context, the build's RUN step sleeps


@pytest.fixture()
def own_storage(build_tools, tmp_path) -> Iterator[Path]:
    """A storage root of this test's own: every count below is of it alone."""
    root = tmp_path / "st"
    yield root
    flags = [*storage_flags(root), "--storage-driver", "overlay"]
    subprocess.run(["podman", *flags, "rm", "--all", "--force"], capture_output=True)
    release_storage(root)


def tool(name: str, root: Path, *args: str, tmp: Path | None = None) -> subprocess.CompletedProcess:
    """buildah or podman on `root`, with the run's TMPDIR (a long root's runroot lives under it)."""
    env = {**os.environ, "TMPDIR": str(tmp)} if tmp else None
    with _tmpdir(tmp):
        flags = [*storage_flags(root), "--storage-driver", "overlay"]
    return subprocess.run([name, *flags, *args], capture_output=True, text=True, timeout=120, env=env)


@contextlib.contextmanager
def _tmpdir(tmp: Path | None) -> Iterator[None]:
    saved = tempfile.tempdir
    tempfile.tempdir = str(tmp) if tmp else saved
    try:
        yield
    finally:
        tempfile.tempdir = saved


def working_containers(root: Path) -> list[str]:
    return json_ids(tool("buildah", root, "containers", "--json").stdout)


def json_ids(text: str) -> list[str]:
    return [row["id"] for row in json.loads(text or "[]") or []]


def smoke_containers(root: Path, tmp: Path | None = None) -> list[str]:
    out = tool("podman", root, "ps", "-a", "-q", "--filter", "label=dev.moltbuild.smoke", tmp=tmp)
    return out.stdout.split()


def merged_mounts(root: Path) -> list[str]:
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in points if p.startswith(str(root)) and p.endswith("/merged")]


def commit(project: Path, message: str) -> None:
    git = ["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", message], check=True)


def killed_when(project: Path, args: list[str], env: dict, ready, *, whole_tree: bool) -> None:
    """Start `invoke ARGS` and SIGKILL it (with `whole_tree`, every process it started) once
    `ready()` holds: what a machine's OOM killer or `kill -9` does to the tool."""
    with ProcessTree() as tree:
        proc = subprocess.Popen(
            [sys.executable, "-m", "invoke", *args],
            cwd=project,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=tree.enter,
        )
        try:
            deadline = time.monotonic() + 300
            while not ready(tree) and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.2)
            said = "" if proc.poll() is None else proc.communicate()[1][-2000:]
            assert ready(tree), f"the run never reached the point to kill: {said}"
            for pid in tree.pids() if whole_tree else [proc.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            proc.kill()
            if not whole_tree:  # what the killed tool started and waits for no longer
                for pid in tree.pids():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


def test_two_checkouts_on_one_store_keep_each_others_images(git_project, mirror, own_storage, tmp_path):
    env = build_env(mirror, own_storage, "hygiene-two", MOLTBUILD_BACKEND="buildah")
    other = tmp_path / "other"
    shutil.copytree(git_project, other, symlinks=True)
    (other / "api" / "moltbook_api" / "extra.txt").write_text("B\n")
    commit(other, "B's change")
    built = invoke(git_project, "build", "--api-only", "--no-smoke", env=env)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr
    mine = read_report(git_project)["api"]["image_id"]
    for _ in range(2):  # B builds twice: its first build is superseded and pruned
        (other / "api" / "moltbook_api" / "extra.txt").write_text(f"B {time.time()}\n")
        commit(other, "B again")
        out = invoke(other, "build", "--api-only", "--no-smoke", env=env)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr
    assert "storage: removed" in out.stdout, out.stdout[-2000:]  # B did prune its own
    assert tool("buildah", own_storage, "inspect", "--type", "image", mine).returncode == 0
    pushed = invoke(git_project, "push", "--only", "api", env=env)
    assert pushed.returncode == 0, pushed.stdout[-2000:] + pushed.stderr
    # an image that vanished anyway (removed by hand): one clear line, not buildah's exit 125
    (other / "api" / "moltbook_api" / "extra.txt").write_text("B last\n")
    commit(other, "B last")
    assert invoke(other, "build", "--api-only", "--no-smoke", env=env).returncode == 0
    theirs = read_report(other)["api"]["image_id"]
    assert tool("buildah", own_storage, "rmi", "--force", theirs).returncode == 0
    gone = invoke(other, "push", "--only", "api", env=env)
    assert gone.returncode != 0
    assert "the image of api is no longer in the local store (pruned?)" in gone.stderr, gone.stderr
    assert "125" not in gone.stderr and len(gone.stderr.strip().splitlines()) == 1, gone.stderr


def _napping(git_project: Path) -> None:
    dockerfile = git_project / "api" / "Dockerfile"
    text = dockerfile.read_text()
    step = "RUN if [ -f /app/moltbook_api/nap ]; then sleep 300; fi\n"
    dockerfile.write_text(text.replace("USER 10001:10001\n", step + "USER 10001:10001\n"))
    (git_project / "api" / NAP).write_text("")
    commit(git_project, "a build step that sleeps while nap exists")


def test_a_killed_build_leaves_containers_the_next_run_and_clean_remove(git_project, mirror, own_storage):
    need_tool("podman")
    if not proctree.available():
        pytest.skip("needs a cgroup of its own for the killed run's processes")
    env = build_env(mirror, own_storage, "hygiene-kill", MOLTBUILD_BACKEND="buildah")
    _napping(git_project)
    args = ["build", "--api-only", "--no-smoke"]
    sleeping = lambda tree: any("sleep 300" in c for c in tree.cmdlines())  # noqa: E731
    killed_when(git_project, args, env, sleeping, whole_tree=True)
    left = working_containers(own_storage)
    assert len(left) >= 1 and merged_mounts(own_storage), "the killed build left nothing to clean"
    (git_project / "api" / NAP).unlink()  # the next build does not sleep
    out = invoke(git_project, *args, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr
    assert f"removed {len(left)} container(s) a killed moltbuild run left" in out.stdout, out.stdout
    assert working_containers(own_storage) == [] and merged_mounts(own_storage) == []
    # killed again; this time `invoke clean` removes what it left
    (git_project / "api" / NAP).write_text("")
    killed_when(git_project, args, env, sleeping, whole_tree=True)
    assert working_containers(own_storage)
    cleaned = invoke(git_project, "clean", "--backend", "buildah", env=env)
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert working_containers(own_storage) == [] and merged_mounts(own_storage) == []
    # a container the tool did not create stays
    assert tool("buildah", own_storage, "from", "--name", "mine", "scratch").returncode == 0
    assert invoke(git_project, "clean", "--backend", "buildah", env=env).returncode == 0
    assert len(working_containers(own_storage)) == 1


def test_a_killed_smoke_check_leaves_a_container_and_auth_dir_the_next_run_reaps(
    git_project, mirror, own_storage, request
):
    need_tool("podman")
    if not proctree.available():
        pytest.skip("needs a cgroup of its own for the killed run's processes")
    # short: buildah's runroot for a long storage path goes under it (podman takes 50 characters)
    private_tmp = Path(tempfile.mkdtemp(prefix="mh-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(private_tmp, ignore_errors=True))
    request.addfinalizer(lambda: tool("podman", own_storage, "rm", "-af", tmp=private_tmp))  # runs first
    env = build_env(
        mirror, own_storage, "hygiene-smoke", MOLTBUILD_BACKEND="buildah", TMPDIR=str(private_tmp)
    )
    dockerfile = git_project / "api" / "Dockerfile"  # slow to start: the check waits for it
    cmd = 'CMD ["python3", "-m", "moltbook_api"]'
    dockerfile.write_text(
        dockerfile.read_text().replace(cmd, 'CMD ["/bin/sh", "-c", "sleep 60; exec python3 -m moltbook_api"]')
    )
    commit(git_project, "slow start")
    killed_when(
        git_project,
        ["build", "--api-only"],
        env,
        lambda _: bool(smoke_containers(own_storage, private_tmp)),
        whole_tree=False,
    )
    assert smoke_containers(own_storage, private_tmp), "the smoke container went with the run"
    assert leftover_temp_dirs(private_tmp), "no private dir (auth.json) outlived the killed run"
    out = invoke(git_project, "build", "--api-only", "--no-smoke", env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr
    assert "container(s) a killed moltbuild run left" in out.stdout, out.stdout
    assert smoke_containers(own_storage, private_tmp) == []
    assert leftover_temp_dirs(private_tmp) == []


def test_smoke_after_a_reused_build_pulls_the_image(git_project, mirror, storage_root, own_storage):
    need_tool("podman")
    first = build_env(mirror, storage_root, "hygiene-reuse", MOLTBUILD_BACKEND="buildah")
    out = invoke(git_project, "build", "--push", "--api-only", "--no-smoke", "--rebuild", env=first)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr
    env = build_env(mirror, own_storage, "hygiene-reuse", MOLTBUILD_BACKEND="buildah")
    reused = invoke(git_project, "build", "--push", "--api-only", env=env)  # the registry has it: reused
    assert reused.returncode == 0, reused.stdout[-2000:] + reused.stderr
    assert not read_report(git_project)["api"].get("image_id")
    smoke = invoke(git_project, "smoke", "--only", "api", env=env)
    assert smoke.returncode == 0, smoke.stdout[-2000:] + smoke.stderr
    assert "no local image; pulling" in smoke.stdout and "[api] smoke: passed" in smoke.stdout
