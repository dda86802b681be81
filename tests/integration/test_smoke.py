"""The release check: built images are started (podman on buildah's storage) and checked before
the push; a broken image never reaches the registry and is never pinned."""

from __future__ import annotations

import subprocess
import threading

import pytest
import requests

from moltbuild.backends.buildah import storage_flags
from tests.conftest import need_tool
from tests.integration.conftest import build_env, clean_env, invoke, read_report

pytestmark = pytest.mark.integration


def leftover_containers(storage_root) -> list[str]:
    """Smoke containers left in this test's own storage (never the machine's others)."""
    flags = [*storage_flags(storage_root), "--storage-driver", "overlay"]
    out = subprocess.run(
        ["podman", *flags, "ps", "-a", "--filter", "name=moltbuild-smoke", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


def test_both_images_pass_and_the_check_is_recorded(git_project, mirror, storage_root):
    need_tool("podman")
    env = build_env(mirror, storage_root, "smoke-ok")
    out = invoke(git_project, "build", "--push", "--backend", "buildah", "--rebuild", env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    entries = read_report(git_project)
    for name in ("api", "frontend"):
        assert f"[{name}] smoke: passed in" in out.stdout
        assert entries[name]["smoke"].startswith("passed in") and "HEALTHCHECK" in entries[name]["smoke"]
        assert "GET /healthz:" in entries[name]["smoke"]
    assert leftover_containers(storage_root) == []
    # the same check by itself, twice at once (each container gets its own host port), and on a pushed ref
    results: list[subprocess.CompletedProcess] = []
    runs = [
        threading.Thread(target=lambda: results.append(invoke(git_project, "smoke", env=env)))
        for _ in range(2)
    ]
    for t in runs:
        t.start()
    for t in runs:
        t.join()
    assert [r.returncode for r in results] == [0, 0], [r.stdout[-1500:] + r.stderr for r in results]
    ref = f"{entries['api']['repository']}:{entries['api']['pin_tag']}"
    by_ref = invoke(git_project, "smoke", "--only", "api", "--ref", ref, env=env)
    assert by_ref.returncode == 0 and "[api] smoke: passed" in by_ref.stdout, (
        by_ref.stdout[-2000:] + by_ref.stderr
    )
    assert leftover_containers(storage_root) == []
    skipped = invoke(git_project, "build", "--api-only", "--backend", "buildah", "--no-smoke", env=env)
    assert skipped.returncode == 0 and read_report(git_project)["api"]["smoke"] == "skipped: --no-smoke"


def _replace_healthcheck(project, healthcheck: str) -> None:
    dockerfile = project / "api" / "Dockerfile"
    text = dockerfile.read_text()
    start = text.index("HEALTHCHECK")
    end = text.index("CMD [", text.index("CMD [", start) + 1)
    dockerfile.write_text(text[:start] + healthcheck + "\n" + text[end:])


def _break_healthcheck(project):
    _replace_healthcheck(
        project,
        'HEALTHCHECK --interval=1s --timeout=1s --retries=2 CMD ["python3", "-c", "raise SystemExit(1)"]',
    )


def _exit_at_start(project):
    dockerfile = project / "api" / "Dockerfile"
    dockerfile.write_text(
        dockerfile.read_text().replace(
            'CMD ["python3", "-m", "moltbook_api"]', 'CMD ["python3", "-c", "raise SystemExit(3)"]'
        )
    )


def _probe_a_missing_path(project):
    manifest = project / "k8s" / "api.yml"
    manifest.write_text(
        manifest.read_text().replace(
            "readinessProbe:\n            httpGet: {path: /healthz",
            "readinessProbe:\n            httpGet: {path: /nope",
        )
    )


@pytest.mark.parametrize(
    "breakage, reason",
    [
        (_break_healthcheck, 'HEALTHCHECK ["python3","-c","raise SystemExit(1)"] failed 2 times (exit 1)'),
        (_exit_at_start, "the container exited at start with code 3"),
        (
            _probe_a_missing_path,
            "k8s/api.yml Deployment moltbook-api readinessProbe: "
            "GET /nope (container port 8000) answered 404",
        ),
    ],
    ids=["healthcheck-fails", "exits-at-start", "probe-404"],
)
def test_a_broken_image_is_refused_before_the_push_and_never_pinned(
    git_project, mirror, storage_root, breakage, reason
):
    need_tool("podman")
    breakage(git_project)
    namespace = f"smoke-{breakage.__name__.strip('_').replace('_', '-')}"
    env = build_env(mirror, storage_root, namespace)
    out = invoke(git_project, "build", "--push", "--api-only", "--backend", "buildah", env=env)
    assert out.returncode != 0
    first = out.stderr.strip().splitlines()[0]
    assert reason in first, out.stderr
    entry = read_report(git_project)["api"]
    assert entry["outcome"] == "failed" and not entry["pushed"] and entry["smoke"].startswith("failed: ")
    assert requests.get(f"{mirror.url}/v2/{namespace}/moltbook-api/tags/list", timeout=10).status_code == 404
    pinned = invoke(git_project, "k8s.set-images", env=env)
    assert pinned.returncode != 0 and "records no pushed image" in pinned.stderr
    assert leftover_containers(storage_root) == []


def test_static_check_names_a_probe_port_the_image_does_not_expose(git_project):
    manifest = git_project / "k8s" / "frontend.yml"
    manifest.write_text(manifest.read_text().replace("containerPort: 8080", "containerPort: 9090"))
    out = invoke(git_project, "smoke", "--static", env=clean_env())
    assert out.returncode != 0
    assert (
        "k8s/frontend.yml Deployment moltbook-frontend readinessProbe: GET /healthz on port 9090"
        in out.stderr
    )
    assert "does not EXPOSE (8080)" in out.stderr


def test_sigterm_during_the_check_removes_its_container(git_project, mirror, storage_root):
    import signal
    import sys
    import time

    need_tool("podman")
    slow = 'CMD ["python3", "-c", "import time; time.sleep(50)"]'
    _replace_healthcheck(git_project, f"HEALTHCHECK --interval=30s --timeout=60s --retries=3 {slow}")
    env = build_env(mirror, storage_root, "smoke-term")
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoke", "build", "--push", "--api-only", "--backend", "buildah"],
        cwd=git_project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not leftover_containers(storage_root) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert leftover_containers(storage_root), "the smoke container never started"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert leftover_containers(storage_root) == []
    assert requests.get(f"{mirror.url}/v2/smoke-term/moltbook-api/tags/list", timeout=10).status_code == 404
