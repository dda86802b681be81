import os

import pytest

from moltbuild.backends.contract import Backend, BackendStatus
from moltbuild.backends.selection import BACKENDS, choose_backend, make_backend
from moltbuild.errors import ConfigError, GuardError
from moltbuild.settings import load_settings
from moltbuild.system.host import StorageVerdict
from moltbuild.system.processes import Runner
from tests.unit.verdicts import storage_verdict


def verdict(nested: bool) -> StorageVerdict:
    return storage_verdict(nested=nested)


def statuses(docker: bool, buildah: bool) -> dict[str, BackendStatus]:
    return {
        "docker": BackendStatus("docker", True, docker, "daemon" if docker else "no daemon"),
        "buildah": BackendStatus("buildah", buildah, buildah, "daemonless" if buildah else "missing"),
        "kaniko": BackendStatus("kaniko", False, False, "no kubectl"),
    }


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_every_registered_backend_constructs(name, tmp_path):
    settings = load_settings(tmp_path, environ={}, tool_config={})
    backend = make_backend(name, Runner(environ=os.environ, dry_run=True), settings, verdict(False))
    assert isinstance(backend, Backend) and backend.name == name


def test_unknown_backend_is_a_config_error(tmp_path):
    settings = load_settings(tmp_path, environ={}, tool_config={})
    with pytest.raises(ConfigError, match=r"unknown backend 'podman'"):
        make_backend("podman", Runner(environ=os.environ), settings, verdict(False))


@pytest.mark.parametrize(
    "docker, buildah, expected",
    [(True, True, "docker"), (False, True, "buildah"), (True, False, "docker")],
)
def test_auto_prefers_working_docker_then_buildah(docker, buildah, expected):
    name, why = choose_backend("auto", statuses(docker, buildah), verdict(False))
    assert name == expected and why.startswith(f"auto picked {expected}")
    if expected == "buildah":
        assert "skipped docker: no daemon" in why


def test_auto_with_nothing_working_says_why():
    with pytest.raises(GuardError, match=r"no backend works here.*docker: no daemon"):
        choose_backend("auto", statuses(False, False), verdict(False))


def test_guard_refuses_docker_on_nested_overlay_unless_forced():
    with pytest.raises(GuardError, match=r"nested overlay.*works here: buildah.*--force"):
        choose_backend("docker", statuses(True, True), verdict(True))
    name, why = choose_backend("docker", statuses(True, True), verdict(True), force=True)
    assert name == "docker" and "--force" in why


def test_explicit_backend_that_is_missing_is_refused():
    with pytest.raises(GuardError, match=r"buildah is not available: missing"):
        choose_backend("buildah", statuses(True, False), verdict(False))
