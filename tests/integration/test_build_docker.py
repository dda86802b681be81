"""`invoke build` with the docker backend against a real dockerd and a real registry."""

from __future__ import annotations

import subprocess
import time

import pytest
import requests

from moltbuild.registry.local import free_port
from tests.integration.conftest import assert_report_matches_registry, build_env, invoke, read_report

pytestmark = pytest.mark.integration


def test_docker_builds_pushes_and_the_api_answers(git_project, mirror, storage_root, dockerd):
    env = build_env(mirror, storage_root, "dboth", DOCKER_HOST=dockerd)
    doctor = invoke(git_project, "doctor", env=env)
    assert "auto picks: docker" in doctor.stdout, doctor.stdout
    out = invoke(git_project, "build", "--push", env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    assert "auto picked docker" in out.stdout
    buildx = subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode == 0
    if not buildx and env.get("DOCKER_BUILDKIT", "").lower() not in ("1", "true", "yes", "on"):
        # The classic builder cannot read or write a registry cache, and says so.
        assert "note: the classic docker builder keeps layers in the daemon only" in out.stdout
        assert all(e["cache"].startswith("not used: ") for e in read_report(git_project).values())
    entries = assert_report_matches_registry(git_project, mirror.url, {"api", "frontend"})
    assert {e["backend"] for e in entries.values()} == {"docker"}

    port = free_port()
    ref = f"{entries['api']['repository']}:{entries['api']['tags'][0]}"
    docker = ["docker", "-H", dockerd]
    cid = subprocess.run(
        [*docker, "run", "-d", "--rm", "-p", f"127.0.0.1:{port}:8000", ref],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    try:
        deadline, body = time.monotonic() + 30, None
        while time.monotonic() < deadline:
            try:
                body = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
                break
            except requests.RequestException:
                time.sleep(0.2)
        assert body == {"status": "ok"}
        user = subprocess.run(
            [*docker, "inspect", "--format", "{{.Config.User}}", cid],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        assert user == "10001:10001"
    finally:
        subprocess.run([*docker, "rm", "-f", cid], capture_output=True)
