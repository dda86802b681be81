"""The invoke tasks, run as a user runs them, in a throwaway copy of the project."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_nested_overlay import run_invoke

pytestmark = pytest.mark.integration
CANARY = "canary-token-0123456789-not-a-real-one"


def test_list_shows_foundation_tasks(project):
    out = run_invoke(project, "--list")
    assert out.returncode == 0, out.stderr
    for name in ("doctor", "env.show", "setup"):
        assert name in out.stdout


def test_list_imports_no_library_module_it_does_not_need(project):
    """`invoke --list` stays fast: no registry client, no backend, no Kubernetes client."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "invoke", "--list"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and "k8s.set-images" in out.stdout and "kaniko.build" in out.stdout
    imported = {
        line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")
    }
    heavy = {m for m in imported if m.split(".")[0] in ("requests", "kubernetes", "urllib3", "ruamel")}
    heavy |= {
        m
        for m in imported
        if m.startswith(
            ("moltbuild.backends.selection", "moltbuild.registry.client", "moltbuild.flows.build")
        )
    }
    assert not heavy, sorted(heavy)


def test_verify_imports_no_backend_no_yaml_no_cluster_client(project):
    """`invoke verify` of a report needs a registry client only."""
    import subprocess
    import sys

    (project / "build").mkdir(exist_ok=True)
    (project / "build" / "images.json").write_text('{"version": 1, "images": []}')
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "invoke", "verify"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert "records no pushed image" in out.stderr, out.stderr[-500:]
    imported = {
        line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")
    }
    assert "moltbuild.registry.verify" in imported
    heavy = {m for m in imported if m.split(".")[0] in ("kubernetes", "ruamel")}
    backends = tuple(f"moltbuild.backends.{b}" for b in ("buildah", "docker", "kaniko", "local"))
    heavy |= {
        m for m in imported if m.startswith((*backends, "moltbuild.flows.build", "moltbuild.smoke.run"))
    }
    assert not heavy, sorted(heavy)


def test_doctor_json_is_valid(project):
    out = run_invoke(project, "doctor", "--json")
    assert out.returncode == 0, out.stderr
    backends = json.loads(out.stdout)["backends"]
    assert set(backends) >= {"docker", "buildah", "kaniko"}
    assert all({"available", "works", "reason"} <= set(b) for b in backends.values())


def test_bad_env_local_line_fails_naming_file_and_line(project):
    (project / ".env.local").write_text(f"GITHUB_TOKEN={CANARY}\n# ok\nnot a setting\n")
    for task in ("env.show", "doctor"):
        out = run_invoke(project, task)
        assert out.returncode != 0
        assert ".env.local:3:" in out.stderr
        assert CANARY not in out.stdout + out.stderr


def test_token_from_env_local_never_printed(project):
    (project / ".env.local").write_text(f"GITHUB_USERNAME=octo\nGITHUB_TOKEN={CANARY}\nMOLTBUILD_BAKEND=x\n")
    show = run_invoke(project, "env.show")
    assert show.returncode == 0, show.stderr
    assert "GITHUB_TOKEN" in show.stdout and "****" in show.stdout and ".env.local:2" in show.stdout
    assert "did you mean MOLTBUILD_BACKEND" in show.stderr
    doctor = run_invoke(project, "doctor", "--json")
    assert json.loads(doctor.stdout)["credentials"]["ghcr.io (GITHUB_TOKEN)"] is True
    for out in (show, doctor):
        assert CANARY not in out.stdout + out.stderr


def test_credentials_in_the_registry_setting_are_refused_and_never_printed(project):
    import os

    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MOLTBUILD_", "GITHUB_", "REGISTRY_"))
    } | {"MOLTBUILD_REGISTRY": f"ci:{CANARY}@127.0.0.1:5000/x", "REGISTRY_PASSWORD": CANARY}
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "invoke", "build", "--push", "--dry-run"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "MOLTBUILD_REGISTRY holds credentials" in out.stderr
    assert CANARY not in out.stdout + out.stderr


@pytest.mark.parametrize(
    "argv, guess",
    [
        (["biuld"], "'build'"),
        (["build", "--jbos", "2"], "'--jobs'"),
        (["k8s.set-imagse"], "'k8s.set-images'"),
    ],
)
def test_a_typo_gets_the_closest_task_or_flag(project, argv, guess):
    out = run_invoke(project, *argv)
    assert out.returncode != 0 and f"Did you mean {guess}?" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
