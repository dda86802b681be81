"""SLSA v1 provenance (https://slsa.dev/provenance/v1) for one pushed image, as plain data: who
built it, from which commit, with which arguments and bases, when. cosign wraps the predicate in
an in-toto statement whose subject is the digest; unsigned, `statement` does the same."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from moltbuild import __version__
from moltbuild.settings import ci_platform

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PROVENANCE_TYPE = "https://slsa.dev/provenance/v1"
# What the parameters below mean: docs/buildtype-image-v1.md (a URN: no project owns the URL space).
BUILD_TYPE = "urn:moltbuild:buildtype:image:v1"
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


def builder(environ: Mapping[str, str], backend: str) -> tuple[str, str]:
    """(builder id, invocation id): the GitHub workflow run when there is one, else the machine."""
    repo, run = environ.get("GITHUB_REPOSITORY", ""), environ.get("GITHUB_RUN_ID", "")
    if ci_platform(environ) == "github-actions" and repo and run:
        server = environ.get("GITHUB_SERVER_URL", "https://github.com")
        workflow = environ.get("GITHUB_WORKFLOW_REF", "")
        attempt = environ.get("GITHUB_RUN_ATTEMPT", "1")
        who = f"{server}/{workflow}" if workflow else f"{server}/{repo}/actions"
        return who, f"{server}/{repo}/actions/runs/{run}/attempts/{attempt}"
    where = "kaniko Job from " if backend == "kaniko" else ""
    return f"urn:moltbuild:builder:{backend}:{where}{socket.gethostname()}", ""


def _dependencies(facts: BuildFacts) -> list[dict[str, Any]]:
    deps: list[dict[str, Any]] = []
    if facts.commit:
        uri = f"git+{facts.source}" if facts.source else "git+local"
        ref = f"@refs/heads/{facts.branch}" if facts.branch else ""
        deps.append({"uri": uri + ref, "digest": {"gitCommit": facts.commit}})
    for base, digest in sorted(facts.bases.items()):
        entry: dict[str, Any] = {"uri": f"oci://{base}", "name": base}
        if digest.startswith("sha256:"):
            entry["digest"] = {"sha256": digest.removeprefix("sha256:")}
        deps.append(entry)
    return deps


def predicate(facts: BuildFacts) -> dict[str, Any]:
    builder_id, invocation = builder(facts.environ, facts.backend)
    metadata = {"startedOn": facts.started, "finishedOn": facts.finished}
    if invocation:
        metadata["invocationId"] = invocation
    return {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "image": facts.image,
                "repository": facts.repository,
                "tags": list(facts.tags),
                "dockerfile": facts.dockerfile,
                "target": facts.target or "",
                "buildArgs": dict(sorted(facts.build_args.items())),
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


def input_digest_of(found: Mapping[str, Any]) -> str:
    try:
        return str(found["predicate"]["buildDefinition"]["internalParameters"]["inputDigest"])
    except (KeyError, TypeError):
        return ""
