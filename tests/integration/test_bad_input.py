"""The standing bad-input suite: every task, every input (flags, .env.local, settings, pyproject,
report, kustomization, Dockerfile, manifests). Each case must exit non-zero with exactly one line
on stderr that names what is wrong, no traceback, and leave the report and the kustomization as
they were."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import clean_env, invoke
from tests.unit.records import pushed_entry

pytestmark = pytest.mark.integration

Setup = Callable[[Path], None]


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    names: str  # the file, key or flag the one line must name
    env: tuple[tuple[str, str], ...] = ()
    setup: Setup | None = None


def write(rel: str, content: str | bytes) -> Setup:
    def setup(project: Path) -> None:
        path = project / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())

    return setup


def report(*entries: dict) -> Setup:
    return write("build/images.json", json.dumps({"version": 1, "images": list(entries)}))


def edit(rel: str, old: str, new: str) -> Setup:
    def setup(project: Path) -> None:
        path = project / rel
        text = path.read_text()
        assert old in text, (rel, old)
        path.write_text(text.replace(old, new))

    return setup


def bind_socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))  # the socket file stays after the close


def remove(rel: str) -> Setup:
    return lambda project: (project / rel).unlink()


def mkdir(rel: str) -> Setup:
    return lambda project: (project / rel).mkdir(parents=True, exist_ok=True)


def env(**values: str) -> tuple[tuple[str, str], ...]:
    return tuple(values.items())


GOOD = pushed_entry("api", repository="127.0.0.1:1/ns/moltbook-api", tags=["sha-abc1234", "main"])
DRY = ("build", "--dry-run")
K = "k8s/bad.yml"
DI = "api/.dockerignore"

CASES = [
    # -- flags ----------------------------------------------------------------------------------
    Case("jobs-not-a-number", (*DRY, "--jobs", "abc"), "--jobs"),
    Case("jobs-zero", (*DRY, "--jobs", "0"), "--jobs"),
    Case("only-unknown-image", (*DRY, "--only", "nope"), "nope"),
    Case("api-and-frontend-only", (*DRY, "--api-only", "--frontend-only"), "--api-only"),
    Case("backend-unknown", (*DRY, "--backend", "podman"), "podman"),
    Case("platform-no-arch", (*DRY, "--platform", "linux"), "--platform"),
    Case("platform-garbage", (*DRY, "--platform", "linux/amd64,,??"), "--platform"),
    Case("tag-with-space", (*DRY, "--tag", "bad tag"), "--tag"),
    Case("tag-leading-dot", (*DRY, "--tag", ".hidden"), "--tag"),
    Case("tag-too-long", (*DRY, "--tag", "x" * 129), "--tag"),
    Case("changed-unknown-base", (*DRY, "--changed", "--base", "no-such-ref"), "no-such-ref"),
    Case("changed-base-option-like", ("changed", "--base", "--output=x"), "--base"),
    Case("push-only-unknown", ("push", "--only", "nope"), "nope", setup=report(GOOD)),
    Case("push-without-report", ("push",), "images.json"),
    Case("tag-without-tag", ("tag",), "--tag"),
    Case("tag-invalid-tag", ("tag", "--tag", "a b"), "--tag", setup=report(GOOD)),
    Case("tag-source-not-a-ref", ("tag", "--source", "not a ref", "--tag", "x"), "--source"),
    Case("tag-source-no-host", ("tag", "--source", "moltbook-api:latest", "--tag", "x"), "--source"),
    Case("tag-source-no-tag", ("tag", "--source", "127.0.0.1:1/ns/api", "--tag", "x"), "--source"),
    Case("verify-report-missing", ("verify", "--report", "missing.json"), "missing.json"),
    Case("verify-kustomization-missing", ("verify", "--kustomization", "missing.yml"), "missing.yml"),
    Case("set-images-report-missing", ("k8s.set-images", "--report", "missing.json"), "missing.json"),
    Case(
        "set-images-kustomization-missing",
        ("k8s.set-images", "--kustomization", "missing.yml"),
        "missing.yml",
        setup=report(GOOD),
    ),
    Case("smoke-ref-uppercase", ("smoke", "--only", "api", "--ref", "127.0.0.1:1/UPPER/x:1"), "--ref"),
    Case("smoke-ref-two-images", ("smoke", "--ref", "127.0.0.1:1/ns/x:1"), "--ref"),
    Case("gh-runs-limit", ("gh.runs", "--limit", "abc"), "--limit"),
    Case("kaniko-timeout", ("kaniko.build", "--dry-run", "--timeout", "soon"), "--timeout"),
    Case("clean-backend-kaniko", ("clean", "--backend", "kaniko"), "--backend"),
    # -- settings from the environment ---------------------------------------------------------
    Case("registry-scheme", DRY, "MOLTBUILD_REGISTRY", env(MOLTBUILD_REGISTRY="http://127.0.0.1:5000/x")),
    Case("registry-uppercase", DRY, "MOLTBUILD_REGISTRY", env(MOLTBUILD_REGISTRY="ghcr.io/UPPER")),
    Case("registry-bad-port", DRY, "MOLTBUILD_REGISTRY", env(MOLTBUILD_REGISTRY="localhost:notaport/x")),
    Case("registry-space", DRY, "MOLTBUILD_REGISTRY", env(MOLTBUILD_REGISTRY="ghcr.io/a b")),
    Case("registry-credentials", DRY, "MOLTBUILD_REGISTRY", env(MOLTBUILD_REGISTRY="u:pw@ghcr.io/x")),
    Case("registry-no-namespace", DRY, "MOLTBUILD_REGISTRY", env(MOLTBUILD_REGISTRY="ghcr.io")),
    Case("backend-setting", DRY, "MOLTBUILD_BACKEND", env(MOLTBUILD_BACKEND="podman")),
    Case("mirror-scheme", DRY, "MOLTBUILD_BASE_MIRROR", env(MOLTBUILD_BASE_MIRROR="http://127.0.0.1:1/m")),
    Case("mirror-space", DRY, "MOLTBUILD_BASE_MIRROR", env(MOLTBUILD_BASE_MIRROR="127.0.0.1:1/a b")),
    Case("ca-missing", DRY, "MOLTBUILD_REGISTRY_CA", env(MOLTBUILD_REGISTRY_CA="/nonexistent/ca.pem")),
    Case("ca-directory", DRY, "MOLTBUILD_REGISTRY_CA", env(MOLTBUILD_REGISTRY_CA="/tmp")),
    Case(
        "ca-missing-rebuild",
        (*DRY, "--rebuild", "--push"),
        "MOLTBUILD_REGISTRY_CA",
        env(MOLTBUILD_REGISTRY_CA="/nonexistent/ca.pem"),
    ),
    Case("image-format", DRY, "MOLTBUILD_IMAGE_FORMAT", env(MOLTBUILD_IMAGE_FORMAT="xml")),
    Case(
        "insecure-with-scheme",
        DRY,
        "MOLTBUILD_INSECURE_REGISTRIES",
        env(MOLTBUILD_INSECURE_REGISTRIES="http://x"),
    ),
    Case(
        "kaniko-timeout-setting",
        ("kaniko.build", "--dry-run"),
        "MOLTBUILD_KANIKO_TIMEOUT",
        env(MOLTBUILD_KANIKO_TIMEOUT="soon"),
    ),
    Case("source-date-epoch", DRY, "SOURCE_DATE_EPOCH", env(SOURCE_DATE_EPOCH="yesterday")),
    Case("idle-timeout", DRY, "MOLTBUILD_IDLE_TIMEOUT", env(MOLTBUILD_IDLE_TIMEOUT="-5")),
    # -- .env.local ---------------------------------------------------------------------------
    Case("env-local-nul", DRY, ".env.local", setup=write(".env.local", "MOLTBUILD_BACKEND=buildah\0\n")),
    Case("env-local-not-utf8", DRY, ".env.local", setup=write(".env.local", b"MOLTBUILD_BACKEND=\xff\xfe\n")),
    Case("env-local-directory", DRY, ".env.local", setup=mkdir(".env.local")),
    Case("env-local-bad-value", DRY, ".env.local", setup=write(".env.local", "MOLTBUILD_IMAGE_FORMAT=xml\n")),
    Case("env-local-bad-line", DRY, ".env.local", setup=write(".env.local", "MOLTBUILD_BACKEND buildah\n")),
    # -- pyproject and the build inputs ----------------------------------------------------------
    Case("dockerfile-missing", DRY, "Dockerfile", setup=remove("api/Dockerfile")),
    Case(
        "context-missing",
        DRY,
        "context",
        setup=edit("pyproject.toml", 'context = "api/"', 'context = "nope/"'),
    ),
    Case(
        "repository-uppercase",
        DRY,
        "repository",
        setup=edit("pyproject.toml", 'repository = "moltbook-api"', 'repository = "Moltbook-API"'),
    ),
    Case(
        "smoke-path-without-port",
        DRY,
        "smoke",
        setup=edit(
            "pyproject.toml",
            "[tool.moltbuild.images.api]\n",
            '[tool.moltbuild.images.api]\nsmoke = {path = "/x"}\n',
        ),
    ),
    Case(
        "tag-template-unknown-placeholder",
        DRY,
        "[tool.moltbuild] tags",
        setup=edit("pyproject.toml", 'backend = "auto"', 'backend = "auto"\ntags = ["{sha7}", "{user}"]'),
    ),
    Case(
        "tag-template-first-without-sha",
        DRY,
        "[tool.moltbuild] tags",
        setup=edit("pyproject.toml", 'backend = "auto"', 'backend = "auto"\ntags = ["{branch}"]'),
    ),
    Case(
        "semver-not-bool",
        DRY,
        "semver",
        setup=edit("pyproject.toml", "semver = true", 'semver = "yes"'),
    ),
    Case("pyproject-invalid", DRY, "pyproject.toml", setup=edit("pyproject.toml", "[project]", "[project")),
    Case("dockerfile-no-from", DRY, "FROM", setup=write("api/Dockerfile", "RUN true\n")),
    # -- the build context -------------------------------------------------------------------------
    Case("context-fifo", DRY, "api/pipe: a FIFO", setup=lambda p: os.mkfifo(p / "api/pipe")),
    Case("context-socket", DRY, "api/sock: a UNIX socket", setup=lambda p: bind_socket(p / "api/sock")),
    Case(
        "dockerignore-trailing-backslash",
        DRY,
        "api/.dockerignore:2",
        setup=write("api/.dockerignore", "*.md\nx\\\n"),
    ),
    Case("dockerignore-unclosed-class", DRY, f"{DI}:1", setup=write(DI, "[a-z\n")),
    Case(
        "healthcheck-bad-duration",
        DRY,
        "HEALTHCHECK",
        setup=edit("api/Dockerfile", "--interval=15s", "--interval=soon"),
    ),
    # a manifest the kustomization lists (k8s/bad.yml is in no resources: it is never read)
    Case(
        "manifest-invalid-yaml", ("smoke", "--static"), "k8s/api.yml", setup=write("k8s/api.yml", "kind: [\n")
    ),
    Case(
        "kustomization-resource-missing",
        ("smoke", "--static"),
        "k8s/kustomization.yml: resource 'gone.yml'",
        setup=edit("k8s/kustomization.yml", "  - frontend.yml\n", "  - frontend.yml\n  - gone.yml\n"),
    ),
    # -- the report ---------------------------------------------------------------------------
    Case("report-not-json", ("push",), "images.json", setup=write("build/images.json", "{")),
    Case("report-tags-string", ("push",), "tags", setup=report({**GOOD, "tags": "latest"})),
    Case("report-entry-not-object", ("verify",), "images[0]", setup=report("api")),
    Case(
        "report-no-repository",
        ("verify",),
        "repository",
        setup=report({k: v for k, v in GOOD.items() if k != "repository"}),
    ),
    Case(
        "report-version",
        ("verify",),
        "images.json",
        setup=write("build/images.json", json.dumps({"version": 9, "images": []})),
    ),
    Case("report-bad-digest", ("verify",), "digest", setup=report({**GOOD, "digest": "notadigest"})),
    Case("report-pushed-without-digest", ("push",), "digest", setup=report({**GOOD, "digest": None})),
    Case(
        "report-repository-uppercase",
        ("push",),
        "repository",
        setup=report({**GOOD, "repository": "127.0.0.1:1/NS/api"}),
    ),
    # -- the kustomization ---------------------------------------------------------------------
    Case("kustomization-a-list", ("verify", "--kustomization", K), K, setup=write(K, "- a\n- b\n")),
    Case(
        "kustomization-not-utf8",
        ("verify", "--kustomization", K),
        K,
        setup=write(K, b"images:\n- name: \xff\n"),
    ),
    Case("kustomization-invalid-yaml", ("verify", "--kustomization", K), K, setup=write(K, "images: [\n")),
    Case(
        "kustomization-no-images", ("verify", "--kustomization", K), K, setup=write(K, "resources: [a.yml]\n")
    ),
    Case(
        "kustomization-bad-digest",
        ("verify", "--kustomization", K),
        K,
        setup=write(K, "images:\n- name: 127.0.0.1:1/ns/api\n  digest: notadigest\n"),
    ),
    Case(
        "kustomization-entry-no-name",
        ("verify", "--kustomization", K),
        K,
        setup=write(K, "images:\n- newTag: x\n"),
    ),
    Case(
        "set-images-into-a-list",
        ("k8s.set-images", "--kustomization", K),
        K,
        setup=lambda p: (write(K, "- a\n")(p), report(GOOD)(p)),
    ),
]


def digest_of(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_one_line_naming_it_and_changes_nothing(case: Case, git_project: Path):
    if case.setup:
        case.setup(git_project)
    watched = [git_project / "build" / "images.json", git_project / "k8s" / "kustomization.yml"]
    before = [digest_of(p) for p in watched]
    defaults = {
        "MOLTBUILD_REGISTRY": "127.0.0.1:1/ns",
        "MOLTBUILD_BASE_MIRROR": "127.0.0.1:1/mirror",
        "MOLTBUILD_BACKEND": "buildah",
        "GITHUB_REPO": "",
    }
    out = invoke(git_project, *case.args, env=clean_env(**{**defaults, **dict(case.env)}), timeout=120)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode != 0, out.stdout[-1500:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert len(lines) == 1, out.stderr
    assert case.names in lines[0], lines[0]
    assert [digest_of(p) for p in watched] == before
