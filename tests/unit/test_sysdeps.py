"""invoke setup as root, through password-less sudo, or with the exact command to run."""

from __future__ import annotations

import os

import pytest

from moltbuild.errors import ToolMissingError
from moltbuild.system import packages as sysdeps
from moltbuild.system.processes import Result, Runner


class ScriptedRunner(Runner):
    """Answers commands from a table instead of starting them: unit tests start no process."""

    def __init__(self, answers: dict[str, int]):
        super().__init__(out=lambda _: None, environ=os.environ)
        self.answers, self.calls = answers, []

    def run(self, argv, **kwargs):
        self.calls.append(argv)
        if argv[0] == "dpkg-query":
            return Result(argv, 0, "buildah not-installed\nskopeo installed\n")
        return Result(argv, self.answers.get(argv[0], 0))


@pytest.fixture()
def debian(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "os-release").write_text("ID=ubuntu\nID_LIKE=debian\n")
    return tmp_path


def test_not_root_uses_sudo_n_when_it_works(debian, monkeypatch):
    monkeypatch.setattr(sysdeps.os, "geteuid", lambda: 1001)
    monkeypatch.setattr(sysdeps.shutil, "which", lambda tool, path=None: f"/usr/bin/{tool}")
    runner = ScriptedRunner({"sudo": 0})
    assert sysdeps.setup(runner, packages=["buildah", "skopeo"], root=debian) == ["buildah"]
    update, install = runner.calls[-2:]
    assert update[:5] == ["sudo", "-n", "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]
    assert install[-1] == "buildah" and "skopeo" not in install


def test_not_root_without_sudo_prints_the_command(debian, monkeypatch):
    monkeypatch.setattr(sysdeps.os, "geteuid", lambda: 1001)
    monkeypatch.setattr(sysdeps.shutil, "which", lambda tool, path=None: f"/usr/bin/{tool}")
    runner = ScriptedRunner({"sudo": 1})
    with pytest.raises(
        ToolMissingError, match=r"no password-less sudo; run as root: apt-get update && .* buildah"
    ):
        sysdeps.setup(runner, packages=["buildah", "skopeo"], root=debian)
    assert not [c for c in runner.calls if "apt-get" in c]


def test_root_runs_apt_get_directly(debian, monkeypatch):
    monkeypatch.setattr(sysdeps.os, "geteuid", lambda: 0)
    runner = ScriptedRunner({})
    sysdeps.setup(runner, packages=["buildah"], root=debian)
    assert runner.calls[-1][0] == "apt-get"


def test_a_build_job_gets_what_building_needs_and_the_tests_get_the_rest(debian, monkeypatch):
    # a CI runner: docker-ce's dockerd on PATH, no docker.io package; nothing of ours installed
    monkeypatch.setattr(sysdeps.os, "geteuid", lambda: 0)
    only_dockerd = {"dockerd": "/usr/bin/dockerd"}
    monkeypatch.setattr(sysdeps.shutil, "which", lambda tool, path=None: only_dockerd.get(tool))
    build = ScriptedRunner({})
    installed = sysdeps.setup(build, root=debian)
    assert set(installed) == {"buildah", "fuse-overlayfs", "podman", "git"}  # skopeo: installed already
    assert not {"docker.io", "python3.11", "docker-registry"} & set(build.calls[-1])
    tests = ScriptedRunner({})
    installed = sysdeps.setup(tests, tests=True, root=debian)
    assert {"docker-registry", "python3.11", "busybox-static"} <= set(installed)
    assert "docker.io" not in installed  # its dockerd is there: apt-get would clash with docker-ce
