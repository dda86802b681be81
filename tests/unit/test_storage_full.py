"""A full image store names its path and the fix, not a missing base in the mirror."""

import os
from pathlib import Path

import pytest

from moltbuild.backends.selection import backend_class
from moltbuild.errors import CommandError, JobError
from moltbuild.plan.planner import BasePull
from moltbuild.settings import load_settings
from moltbuild.system.processes import Runner
from tests.unit.verdicts import storage_verdict

FULL = "writing blob: storing blob to file: write /var/lib/containers/x: no space left on device"


def buildah(tmp_path: Path):
    settings = load_settings(tmp_path, environ={}, tool_config={})
    return backend_class("buildah")(
        Runner(environ=os.environ, out=lambda _: None), settings, storage_verdict(path="/srv/store")
    )


@pytest.mark.parametrize("mirror", [None, "mirror.example/hub"])
def test_a_pull_into_a_full_store_names_the_store(tmp_path, monkeypatch, mirror):
    backend = buildah(tmp_path)

    def pull_base(base, source):
        raise CommandError(["buildah", "pull", source], 125, FULL)

    monkeypatch.setattr(backend, "pull_base", pull_base)
    run = type("Run", (), {"mirror": mirror})()
    source = f"{mirror}/library/python:3.12-slim" if mirror else "python:3.12-slim"
    error = backend._pull(run, "python:3.12-slim", BasePull(source, ("api",)))
    assert isinstance(error, JobError)
    assert (
        "the image storage at /srv/store is full" in error.message
        and "MOLTBUILD_STORAGE_ROOT" in error.message
    )
    assert "exists in the mirror" not in error.message


def test_a_build_that_fills_the_store_says_so(tmp_path):
    backend = buildah(tmp_path)
    assert backend._storage_full("Error: committing container: no space left on device").startswith(
        "the image storage at /srv/store is full"
    )
    assert backend._storage_full("Error: manifest unknown") == ""
