"""A newcomer's first hour: settings that just work and errors that say what to do."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest

from moltbuild.registry.local import LocalRegistry
from moltbuild.system.processes import Runner
from tests.conftest import need
from tests.integration.conftest import (
    assert_report_matches_registry,
    build_env,
    clean_env,
    invoke,
    release_storage,
)
from tests.support.registries import TestRegistry

pytestmark = pytest.mark.integration


def test_a_loopback_registry_and_mirror_need_no_insecure_setting(git_project, mirror, storage_root):
    env = build_env(mirror, storage_root, "loop")
    del env["MOLTBUILD_INSECURE_REGISTRIES"]  # plain HTTP on 127.0.0.1, as Docker allows it
    out = invoke(git_project, "build", "--push", "--api-only", "--no-smoke", "--backend", "buildah", env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    assert_report_matches_registry(git_project, mirror.url, {"api"})
    verified = invoke(git_project, "verify", env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_name_that_does_not_resolve_fails_at_once_with_one_line(git_project):
    env = clean_env(
        MOLTBUILD_REGISTRY="no-such-registry.invalid/ns",
        REGISTRY_USERNAME="ci",
        REGISTRY_PASSWORD="a-long-enough-secret",
    )
    start = time.monotonic()
    out = invoke(git_project, "build", "--push", "--api-only", env=env)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode != 0 and len(lines) == 1, out.stderr
    assert "does not resolve (DNS)" in lines[0] and "MOLTBUILD_REGISTRY" in lines[0]
    assert time.monotonic() - start < 8  # no 9 s of retries on a name that cannot resolve


def test_docker_without_a_daemon_says_so(git_project, tmp_path):
    env = clean_env(MOLTBUILD_REGISTRY="127.0.0.1:1/ns", DOCKER_HOST=f"unix://{tmp_path}/none.sock")
    out = invoke(git_project, "build", "--backend", "docker", "--api-only", env=env)
    assert out.returncode != 0
    assert "backend docker does not work here: no Docker daemon answers" in out.stderr, out.stderr
    assert "mirror" not in out.stderr


def test_doctor_asks_the_registry_whether_credentials_are_needed(git_project, tmp_path):
    with LocalRegistry(tmp_path / "open", Runner(environ=os.environ)) as reg:
        open_env = clean_env(MOLTBUILD_REGISTRY=f"{reg.host}/ns")
        out = invoke(git_project, "doctor", env=open_env)
        assert out.returncode == 0 and "no registry credentials" not in out.stdout, out.stdout
    gone = invoke(git_project, "doctor", env=clean_env(MOLTBUILD_REGISTRY=f"{reg.host}/ns"))
    assert "no registry credentials and" in gone.stdout and "could not be asked" in gone.stdout


def test_verify_of_a_missing_report_says_not_found(git_project):
    out = invoke(git_project, "verify", "--report", "nowhere.json", env=clean_env())
    assert out.returncode != 0 and "nowhere.json" in out.stderr and "not found" in out.stderr, out.stderr


def test_the_run_ends_with_a_copyable_table_or_json(git_project, mirror, storage_root):
    env = build_env(mirror, storage_root, "table")
    out = invoke(git_project, "build", "--push", "--api-only", "--no-smoke", env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    entry = json.loads((git_project / "build" / "images.json").read_text())["images"][0]
    assert f"{entry['repository']}@{entry['digest']}" in out.stdout  # copyable reference
    assert entry["size_bytes"] > 0 and re.search(r"\d+\.\d (kB|MB)", out.stdout.split("reference")[-1])
    assert "report: " in out.stdout and "images.json; logs: " in out.stdout

    as_json = invoke(git_project, "push", "--json", env=env)
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)  # stdout holds the JSON alone; progress went to stderr
    assert doc["images"][0]["digest"] == entry["digest"] and "[api]" in as_json.stderr


def test_a_failed_image_has_its_row_reason_and_log(git_project, mirror, storage_root):
    dockerfile = git_project / "api" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace("WORKDIR /app", "RUN exit 3\nWORKDIR /app"))
    env = build_env(mirror, storage_root, "failrow")
    out = invoke(git_project, "build", "--api-only", "--no-smoke", "--backend", "buildah", env=env)
    assert out.returncode != 0
    table = out.stdout.split("reference")[-1]
    assert "FAILED: buildah build of api" in table and "(log: " in table and "api.log" in table


def test_the_console_gets_a_line_per_step_and_the_log_gets_everything(git_project, mirror, storage_root):
    env = build_env(mirror, storage_root, "compact")
    out = invoke(git_project, "build", "--api-only", "--no-smoke", "--rebuild", "--no-cache", env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    lines = out.stdout.splitlines()
    assert any(re.match(r"\[api\] build \d+/\d+: COPY ", line) for line in lines), out.stdout
    assert "--storage-driver" not in out.stdout  # no 1,000-character command lines
    assert max(len(line) for line in lines if line.startswith("[api]")) < 200
    log = (git_project / "build" / "logs" / "api.log").read_text()
    assert "--storage-driver" in log and "STEP 1/" in log  # the whole command and the tool's output
    verbose = invoke(git_project, "build", "--api-only", "--no-smoke", "--rebuild", "-v", env=env)
    assert verbose.returncode == 0 and "--storage-driver" in verbose.stdout and "STEP 1/" in verbose.stdout


def test_a_dry_run_push_without_credentials_shows_the_plan_and_warns(git_project):
    env = clean_env(MOLTBUILD_BACKEND="buildah")  # ghcr.io, no GITHUB_TOKEN
    out = invoke(git_project, "build", "--push", "--dry-run", env=env)
    assert out.returncode == 0, out.stderr
    assert "ghcr.io/ardenone/moltbook-api" in out.stdout and "+ PUT" in out.stdout  # the whole plan
    assert (
        "warning: pushing to ghcr.io needs GITHUB_TOKEN" in out.stderr
        and "a real run stops here" in out.stderr
    )
    real = invoke(git_project, "build", "--push", env=env)
    assert real.returncode != 0 and "needs GITHUB_TOKEN" in real.stderr


def non_loopback_address() -> str | None:
    found = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    return next((a for a in found if ":" not in a and not a.startswith("127.")), None)


@pytest.mark.parametrize("tls, hint", [(True, "set MOLTBUILD_REGISTRY_CA"), (False, "speaks plain HTTP")])
def test_a_mirror_off_loopback_that_tls_cannot_reach_names_the_setting(
    git_project, build_tools, tls_files, tmp_path, tls, hint
):
    address = non_loopback_address()
    need(address is not None, "needs an address of this machine that is not loopback")
    storage = tmp_path / "storage"  # empty: the base must come through the mirror
    try:
        with TestRegistry(tmp_path / "far", tls=tls_files if tls else None, address=address) as far:
            env = clean_env(
                MOLTBUILD_REGISTRY="127.0.0.1:1/ns",
                MOLTBUILD_BASE_MIRROR=f"{far.host}/mirror",
                MOLTBUILD_STORAGE_ROOT=str(storage),
                MOLTBUILD_BACKEND="buildah",
            )
            out = invoke(git_project, "build", "--api-only", "--no-smoke", env=env)
    finally:
        release_storage(storage)
    assert out.returncode != 0
    assert hint in out.stderr and far.host in out.stderr, out.stderr
    assert "exists in the mirror" not in out.stderr


def test_tags_and_labels_come_from_the_repository_that_holds_the_context(git_project):
    """A context in a checkout of its own (a submodule) is tagged with its own revision."""
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    api = git_project / "api"
    subprocess.run([*git, "-C", str(api), "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "-C", str(api), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(api), "commit", "-qm", "api alone"], check=True)

    def head(path) -> str:
        return subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()

    out = invoke(git_project, "build", "--dry-run", env=clean_env(MOLTBUILD_REGISTRY="127.0.0.1:1/ns"))
    assert out.returncode == 0, out.stderr
    api_sha, top_sha = head(api), head(git_project)
    assert api_sha != top_sha
    assert f"api comes from another repository at {api_sha}" in out.stdout
    api_row = next(line for line in out.stdout.splitlines() if line.startswith("api "))
    front_row = next(line for line in out.stdout.splitlines() if line.startswith("frontend "))
    assert f"sha-{api_sha[:7]}" in api_row and f"sha-{top_sha[:7]}" in front_row
    # the labels go in one LABEL step of a second Containerfile; the dry run shows it
    (labels,) = [ln for ln in out.stdout.splitlines() if "api.labels.Containerfile: LABEL" in ln]
    assert f'"org.opencontainers.image.revision"="{api_sha}"' in labels


def test_a_terminal_gets_a_live_status_and_a_pipe_gets_plain_lines(git_project, mirror, storage_root):
    import os
    import pty
    import sys

    env = {k: v for k, v in build_env(mirror, storage_root, "live", TERM="xterm").items() if k != "CI"}
    argv = [sys.executable, "-m", "invoke", "build", "--api-only", "--no-smoke", "--rebuild", "--no-cache"]
    main, child = pty.openpty()
    proc = subprocess.Popen(
        argv, cwd=git_project, env=env, stdout=child, stderr=child, stdin=subprocess.DEVNULL
    )
    os.close(child)
    screen = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        screen += chunk
    os.close(main)
    assert proc.wait(timeout=300) == 0, screen[-2000:]
    text = screen.decode(errors="replace")
    assert "\x1b[" in text and "[api] build 1/" in text  # steps redrawn in place
    piped = invoke(git_project, "build", "--api-only", "--no-smoke", "--rebuild", env=env)
    assert piped.returncode == 0 and "\x1b[" not in piped.stdout and "[api] build 1/" in piped.stdout


def test_the_old_scripts_habits_image_tag_and_force(git_project):
    env = clean_env(MOLTBUILD_REGISTRY="127.0.0.1:1/ns", MOLTBUILD_BACKEND="buildah", IMAGE_TAG="rc1")
    out = invoke(git_project, "build", "--dry-run", "--api-only", env=env)
    assert out.returncode == 0, out.stderr
    api_row = next(line for line in out.stdout.splitlines() if line.startswith("api "))
    assert "rc1" in api_row and "IMAGE_TAG is deprecated" in out.stderr and "use --tag" in out.stderr
    helptext = invoke(git_project, "--help", "build", env=clean_env()).stdout
    force = re.search(r"--force(.*?)\n  -", helptext, re.S).group(1)  # the help may wrap
    assert "nested overlay" in force and "--rebuild" in force  # --rebuild builds although unchanged
