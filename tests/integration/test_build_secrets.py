"""Build secrets and cache mounts with buildah, for real: a canary secret reaches the RUN step
that checks it and appears in no output (argv of every buildah call, stdout and stderr, the
report, the logs, the dry run, and every blob the registry holds after the push: layers, config
and history, labels, the SBOM and the provenance); a cache mount keeps its content between
builds and is no input."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from moltbuild.registry.local import LocalRegistry
from moltbuild.system.processes import Runner
from tests.conftest import ROOT
from tests.integration.conftest import build_env, invoke, read_report, spied_calls, spy_on

pytestmark = pytest.mark.integration

CANARY = "canary-7d41a0c2-never-shown"
DOCKERFILE = f"""FROM busybox:1.36
RUN --mount=type=secret,id=tok test "$(sha256sum /run/secrets/tok | cut -d' ' -f1)" = \\
    "{hashlib.sha256(CANARY.encode()).hexdigest()}" && echo secret-checked
COPY stamp /stamp
RUN --mount=type=cache,target=/cache sh -c \\
    'echo "cache-runs-before=$(cat /cache/runs 2>/dev/null | wc -l)"; echo run >> /cache/runs'
"""
PYPROJECT = """[project]
name = "secrets-fixture"
version = "0"

[tool.moltbuild.images.app]
repository = "sec-app"
context = "app"
secrets = {tok = "env:SEC_TOKEN"}
"""


def _git(repo: Path, *args: str) -> None:
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(["git", "-C", str(repo), *ident, *args], check=True, capture_output=True)


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "app").mkdir(parents=True)
    (repo / "pyproject.toml").write_text(PYPROJECT)
    (repo / "app" / "Dockerfile").write_text(DOCKERFILE)
    (repo / "app" / "stamp").write_text("1\n")
    shutil.copy(ROOT / "tasks.py", repo / "tasks.py")
    (repo / ".gitignore").write_text("build/\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "fixture")
    return repo


def _blobs(data_dir: Path) -> list[bytes]:
    """Every blob the registry stores, gunzipped where it is a gzip'd layer, a DSSE envelope's
    payload (the SBOM and provenance statements) decoded."""
    found = []
    for path in data_dir.rglob("data"):
        raw = path.read_bytes()
        blob = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        found.append(blob)
        if blob.startswith(b"{") and b'"payload"' in blob:
            found.append(base64.b64decode(json.loads(blob)["payload"]))
    return found


def test_a_secret_reaches_run_and_no_output_and_a_cache_mount_persists(repo, mirror, storage_root, tmp_path):
    target = LocalRegistry(tmp_path / "target", Runner(environ=os.environ)).start()
    try:
        path, calls = spy_on("buildah", tmp_path)
        env = build_env(mirror, storage_root, "unused", PATH=path, SEC_TOKEN=CANARY)
        env |= {
            "MOLTBUILD_REGISTRY": f"{target.host}/sec",
            "MOLTBUILD_INSECURE_REGISTRIES": f"{mirror.host},{target.host}",
            "MOLTBUILD_ATTEST": "auto",
        }
        start = time.monotonic()
        dry = invoke(repo, "build", "--push", "--no-smoke", "--dry-run", "--backend", "buildah", env=env)
        assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr
        assert "app secrets: tok from env:SEC_TOKEN" in dry.stdout
        assert "--secret id=tok,src=" in dry.stdout

        built = invoke(repo, "build", "--push", "--no-smoke", "--backend", "buildah", env=env)
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr
        log = (repo / "build" / "logs" / "app.log").read_text()
        assert "secret-checked" in log
        before = int(re.findall(r"cache-runs-before=(\d+)", log)[-1])  # buildah keeps caches per host

        (repo / "app" / "stamp").write_text("2\n")  # the cache step runs again; the secret step is reused
        _git(repo, "commit", "-qam", "stamp")
        again = invoke(repo, "build", "--no-smoke", "--backend", "buildah", env=env)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr
        assert f"cache-runs-before={before + 1}" in (repo / "build" / "logs" / "app.log").read_text()

        missing = invoke(repo, "build", "--no-smoke", "--backend", "buildah", env={**env, "SEC_TOKEN": ""})
        assert missing.returncode != 0
        assert "secret tok: the environment variable SEC_TOKEN is not set" in missing.stderr

        kaniko = invoke(repo, "kaniko.build", "--dry-run", env={**env, "KUBECONFIG": str(tmp_path / "none")})
        assert kaniko.returncode != 0 and "the kaniko executor cannot mount secrets" in kaniko.stderr, (
            kaniko.stdout[-2000:] + kaniko.stderr
        )
        assert "+ create Job" not in kaniko.stdout

        entry = read_report(repo)["app"]
        print(f"secrets test: {time.monotonic() - start:.1f}s")
        everything = [dry.stdout, dry.stderr, built.stdout, built.stderr, again.stdout, again.stderr]
        everything += [p.read_text(errors="replace") for p in (repo / "build").rglob("*") if p.is_file()]
        everything += [" ".join(call) for call in spied_calls(calls)]
        assert any("--secret" in " ".join(call) for call in spied_calls(calls))
        assert not [text[:200] for text in everything if CANARY in text]
        blobs = _blobs(target.data_dir / "data")
        assert len(blobs) >= 3 and not [b[:200] for b in blobs if CANARY.encode() in b]
        provenance = [b for b in blobs if b'"buildDefinition"' in b]
        assert provenance and b'"secrets":["tok"]' in provenance[0].replace(b" ", b""), entry
    finally:
        target.stop()


def test_docker_buildkit_mounts_the_secret_and_shows_it_nowhere(
    repo, mirror, storage_root, dockerd, tmp_path
):
    """BuildKit through the daemon (DOCKER_BUILDKIT=1 with the CLI before 23 at /usr/bin/docker)."""
    bindir = tmp_path / "docker-cli"
    bindir.mkdir()
    (bindir / "docker").symlink_to("/usr/bin/docker")
    env = build_env(mirror, storage_root, "dsec", DOCKER_HOST=dockerd, SEC_TOKEN=CANARY)
    env["PATH"] = f"{bindir}:{env['PATH']}"
    built = invoke(repo, "build", "--no-smoke", "--backend", "docker", env=env)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr
    log = (repo / "build" / "logs" / "app.log").read_text()
    assert "secret-checked" in log, log[-2000:]
    history = subprocess.run(
        ["/usr/bin/docker", "-H", dockerd, "history", "--no-trunc", read_report(repo)["app"]["image_id"]],
        capture_output=True,
        text=True,
    )
    texts = [built.stdout, built.stderr, log, history.stdout, (repo / "build" / "images.json").read_text()]
    assert history.returncode == 0 and not [t[:200] for t in texts if CANARY in t]


def test_moltbuild_init_proposes_the_table_from_a_compose_file(tmp_path):
    repo = tmp_path / "shop"
    (repo / "api").mkdir(parents=True)
    (repo / "api" / "Dockerfile").write_text("FROM busybox:1.36\nARG MODE\n")
    (repo / "docker-compose.yml").write_text(
        "services:\n  api:\n    image: ghcr.io/shop/shop-api:1\n"
        "    build: {context: ./api, args: {MODE: release}}\n"
    )
    _git(repo, "init", "-q", "-b", "main")
    done = subprocess.run(
        [sys.executable, "-m", "moltbuild.cli.main", "init"], cwd=repo, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Dockerfile: api/Dockerfile (from docker-compose.yml services.api.build)" in done.stdout
    table = (repo / "pyproject.toml").read_text()
    assert '[tool.moltbuild.images.api]\nrepository = "shop-api"\ncontext = "api/"' in table
    assert 'build_args = {MODE = "release"}' in table
