"""SLSA v1 provenance (https://slsa.dev/provenance/v1) for one pushed image, as plain data: who
built it, from which commit (a dirty tree is no exact commit), with which arguments and bases
(package URLs), when. cosign wraps the predicate in an in-toto statement whose subject is the
digest; unsigned, `statement` does the same. The build type resolves to its document."""

from __future__ import annotations

import base64
import importlib.metadata
import json
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from moltbuild import __version__
from moltbuild.errors import MoltbuildError
from moltbuild.refs import ImageRef
from moltbuild.settings import ci_platform

# What `cosign attest` (v2 and v3) wraps every predicate in: the unsigned path writes the same, so a
# policy matching `_type` sees one kind whether or not the image was signed.
STATEMENT_TYPE = "https://in-toto.io/Statement/v0.1"
# SLSA v1 spells it `invocationId`; cosign v2 re-marshals the predicate through in-toto-golang's
# struct (Go matches keys case-insensitively) and emits `invocationID`. Readers accept both.
INVOCATION_KEYS = ("invocationId", "invocationID")
PROVENANCE_TYPE = "https://slsa.dev/provenance/v1"
# What the parameters below mean: this document, at moltbuild's repository when [project.urls] names it.
BUILD_TYPE_DOC = "docs/buildtype-image-v1.md"
BUILD_TYPE_URN = "urn:moltbuild:buildtype:image:v1"
SBOM_TYPES = {"spdx-json": "https://spdx.dev/Document", "cyclonedx-json": "https://cyclonedx.org/bom"}
INTOTO_PAYLOAD = "application/vnd.in-toto+json"


@dataclass(frozen=True)
class BuildFacts:
    """What the run knows about one image once its digest is in the registry."""

    image: str  # the image's name in the project (api, frontend)
    repository: str  # HOST/PATH
    digest: str
    tags: tuple[str, ...]
    source: str  # repository URL without credentials ('' when unknown)
    commit: str
    dirty: bool
    branch: str | None
    build_args: Mapping[str, str]
    dockerfile: str  # relative to the project
    target: str | None
    platforms: tuple[str, ...]
    input_digest: str
    bases: Mapping[str, str]  # base as the Dockerfile names it -> its digest ('' when unresolved)
    backend: str
    backend_detail: str  # e.g. "buildah 1.28.2, daemonless ..."
    started: str  # RFC 3339
    finished: str
    reused: bool = False
    environ: Mapping[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()  # the build secrets' ids: never a value, nor where it came from


def build_type(project_urls: Mapping[str, str]) -> str:
    """A URI that resolves to the build type's document in moltbuild's repository; the URN the
    document is named by when the repository is not known."""
    repo = project_urls.get("Repository", "").rstrip("/")
    if repo.startswith("https://github.com/"):
        return f"{repo}/blob/main/{BUILD_TYPE_DOC}"
    return f"{repo}/{BUILD_TYPE_DOC}" if repo.startswith("https://") else BUILD_TYPE_URN


def own_project_urls() -> dict[str, str]:
    """moltbuild's own [project.urls]: from the installed distribution, else its source checkout."""
    try:
        entries = importlib.metadata.metadata("moltbuild").get_all("Project-URL") or []
        return dict(tuple(part.strip() for part in e.split(",", 1)) for e in entries if "," in e)
    except importlib.metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parents[3] / "pyproject.toml"
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    except (OSError, ValueError):
        return {}
    return dict(project.get("urls", {})) if project.get("name") == "moltbuild" else {}


def builder(environ: Mapping[str, str], backend: str) -> tuple[str, str]:
    """(builder id, invocation id): the GitHub workflow run when there is one, else the machine
    (a URN: the host name percent-encoded, no spaces)."""
    repo, run = environ.get("GITHUB_REPOSITORY", ""), environ.get("GITHUB_RUN_ID", "")
    if ci_platform(environ) == "github-actions" and repo and run:
        server = environ.get("GITHUB_SERVER_URL", "https://github.com")
        workflow = environ.get("GITHUB_WORKFLOW_REF", "")
        attempt = environ.get("GITHUB_RUN_ATTEMPT", "1")
        who = f"{server}/{workflow}" if workflow else f"{server}/{repo}/actions"
        return who, f"{server}/{repo}/actions/runs/{run}/attempts/{attempt}"
    return f"urn:moltbuild:builder:{quote(backend, safe='')}:{quote(socket.gethostname(), safe='')}", ""


def purl(base: str, digest: str) -> str:
    """A base image as a package URL (pkg:docker/NAMESPACE/NAME@VERSION?repository_url=HOST): the
    digest as version when known, else the tag; the name as written when it is no image name."""
    try:
        ref = ImageRef.parse(base, "base image", default_tag="latest")
    except MoltbuildError:
        return base
    version = digest if digest.startswith("sha256:") else (ref.digest or ref.tag or "latest")
    path = quote(ref.repository, safe="/")
    return f"pkg:docker/{path}@{quote(version, safe=':')}?repository_url={quote(ref.host, safe=':')}"


def _dependencies(facts: BuildFacts) -> list[dict[str, Any]]:
    deps: list[dict[str, Any]] = []
    if facts.commit:
        uri = f"git+{facts.source}" if facts.source else "git+local"
        ref = f"@refs/heads/{facts.branch}" if facts.branch else ""
        source: dict[str, Any] = {"uri": uri + ref, "digest": {"gitCommit": facts.commit}}
        if facts.dirty:  # the commit plus changes: no digest claims the exact tree
            source = {"uri": uri + ref, "annotations": {"dirty": True, "headCommit": facts.commit}}
        deps.append(source)
    for base, digest in sorted(facts.bases.items()):
        entry: dict[str, Any] = {"uri": purl(base, digest), "name": base}
        if digest.startswith("sha256:"):
            entry["digest"] = {"sha256": digest.removeprefix("sha256:")}
        deps.append(entry)
    return deps


def predicate(facts: BuildFacts) -> dict[str, Any]:
    builder_id, invocation = builder(facts.environ, facts.backend)
    metadata = {"startedOn": facts.started, "finishedOn": facts.finished}
    if invocation:
        metadata[INVOCATION_KEYS[0]] = invocation
    return {
        "buildDefinition": {
            "buildType": build_type(own_project_urls()),
            "externalParameters": {
                "image": facts.image,
                "repository": facts.repository,
                "tags": list(facts.tags),
                "dockerfile": facts.dockerfile,
                "target": facts.target or "",
                "buildArgs": dict(sorted(facts.build_args.items())),
                **({"secrets": sorted(facts.secrets)} if facts.secrets else {}),
                "platforms": list(facts.platforms),
                "source": {"repository": facts.source, "commit": facts.commit, "dirty": facts.dirty},
            },
            "internalParameters": {
                "backend": facts.backend,
                "backendDetail": facts.backend_detail,
                "inputDigest": facts.input_digest,
                "reused": facts.reused,
            },
            "resolvedDependencies": _dependencies(facts),
        },
        "runDetails": {
            "builder": {"id": builder_id, "version": {"moltbuild": __version__}},
            "metadata": metadata,
        },
    }


def statement(repository: str, digest: str, predicate_type: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The in-toto statement cosign would make: one subject, the image by digest."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": repository, "digest": {"sha256": digest.removeprefix("sha256:")}}],
        "predicateType": predicate_type,
        "predicate": dict(body),
    }


def decode_envelope(text: str | bytes) -> dict[str, Any] | None:
    """The statement inside a DSSE envelope (as cosign prints or stores it), None when it is not one."""
    try:
        envelope = json.loads(text)
        if envelope.get("payloadType") != INTOTO_PAYLOAD:
            return None
        found = json.loads(base64.b64decode(envelope["payload"]))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return found if isinstance(found, dict) else None


def subject_digests(found: Mapping[str, Any]) -> set[str]:
    subjects = found.get("subject")
    if not isinstance(subjects, list):
        return set()
    return {
        "sha256:" + s["digest"]["sha256"]
        for s in subjects
        if isinstance(s, dict)
        and isinstance(s.get("digest"), dict)
        and isinstance(s["digest"].get("sha256"), str)
    }


def commit_of(found: Mapping[str, Any]) -> str:
    try:
        return str(found["predicate"]["buildDefinition"]["externalParameters"]["source"]["commit"])
    except (KeyError, TypeError):
        return ""


def invocation_of(found: Mapping[str, Any]) -> str:
    """The build run's id, under either spelling (see INVOCATION_KEYS); '' when none is recorded."""
    try:
        metadata = found["predicate"]["runDetails"]["metadata"]
        return next((str(metadata[k]) for k in INVOCATION_KEYS if metadata.get(k)), "")
    except (KeyError, TypeError, AttributeError):
        return ""


def input_digest_of(found: Mapping[str, Any]) -> str:
    try:
        return str(found["predicate"]["buildDefinition"]["internalParameters"]["inputDigest"])
    except (KeyError, TypeError):
        return ""
