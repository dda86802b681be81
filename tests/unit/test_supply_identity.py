"""Whose keyless signature counts: the workflow's verify step, the handbook's cosign command and its
Kyverno policy all accept this repository's workflow on `main` and `v*` tags, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from moltbuild.errors import ConfigError
from moltbuild.flows import attest as attest_flow
from moltbuild.flows.context import Session
from moltbuild.settings import load_settings
from moltbuild.system.processes import Runner

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = yaml.safe_load((ROOT / ".github/workflows/build-images.yml").read_text())
HANDBOOK = (ROOT / "docs/handbook.md").read_text()
SERVER, REPO = "https://github.com", "ardenone/moltbook-org"
SIGNER = f"{SERVER}/{REPO}/.github/workflows/build-images.yml@"


def step_index(text: str) -> int:
    steps = WORKFLOW["jobs"]["build"]["steps"]
    return next(i for i, s in enumerate(steps) if text in s.get("run", ""))


def identity_step() -> dict:
    return WORKFLOW["jobs"]["build"]["steps"][step_index("MOLTBUILD_VERIFY_IDENTITY=")]


def workflow_identity() -> str:
    """What the step's shell makes of the server and repository: dots escaped, then the job's
    suffix; written to GITHUB_ENV, so the build and the verify step read the same identity."""
    run = identity_step()["run"]
    assert "sed 's/[.]/\\\\./g'" in run and '"MOLTBUILD_VERIFY_IDENTITY=^$repo$IDENTITY_REF"' in run
    assert '>> "$GITHUB_ENV"' in run
    return "^" + f"{SERVER}/{REPO}".replace(".", r"\.") + WORKFLOW["jobs"]["build"]["env"]["IDENTITY_REF"]


def test_the_build_knows_whose_signature_counts_before_it_builds_or_signs():
    assert step_index("MOLTBUILD_VERIFY_IDENTITY=") < step_index("invoke build") < step_index("invoke verify")


def keyless_run(tmp_path: Path, ref: str) -> Session:
    """The build step of the workflow on `ref`: GitHub's OIDC token, its workflow ref, the identity."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for tool in ("cosign", "syft"):  # found on PATH, never run
        (bindir / tool).write_text("")
        (bindir / tool).chmod(0o755)
    environ = {
        "GITHUB_SERVER_URL": SERVER,
        "GITHUB_WORKFLOW_REF": f"{REPO}/.github/workflows/build-images.yml@{ref}",
        "ACTIONS_ID_TOKEN_REQUEST_URL": "https://token.example",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "t",
        "MOLTBUILD_ATTEST": "on",
        "MOLTBUILD_VERIFY_IDENTITY": workflow_identity(),
    }
    settings = load_settings(tmp_path, environ=environ, tool_config={})
    return Session(
        settings=settings, runner=Runner(out=lambda _: None, environ={"PATH": str(bindir)}), environ=environ
    )


@pytest.mark.parametrize("ref", ["refs/heads/main", "refs/tags/v1.2.3"])
def test_a_release_ref_signs(tmp_path, ref):
    attest_flow.preflight(keyless_run(tmp_path, ref))  # no refusal: the identity admits it


@pytest.mark.parametrize("ref", ["refs/heads/feature", "refs/heads/main-evil", "refs/tags/1.2.3"])
def test_a_dispatch_from_another_ref_stops_before_building_or_signing(tmp_path, ref):
    with pytest.raises(ConfigError) as refused:
        attest_flow.preflight(keyless_run(tmp_path, ref))
    message = refused.value.message
    assert "\n" not in message
    assert message.startswith(
        f"this run would sign keyless as {SIGNER}{ref}, which MOLTBUILD_VERIFY_IDENTITY"
    )
    assert "nothing is built or signed" in message and "main or a v* tag" in message


@pytest.mark.parametrize("ref", ["refs/heads/main", "refs/tags/v1.2.3", "refs/tags/v2"])
def test_the_identity_accepts_the_refs_the_workflow_releases_from(ref):
    assert re.fullmatch(workflow_identity(), SIGNER + ref)


@pytest.mark.parametrize(
    "identity",
    [
        SIGNER + "refs/heads/feature",
        SIGNER + "refs/heads/main-evil",
        SIGNER + "refs/pull/1/merge",
        SIGNER + "refs/tags/1.2.3",
        SIGNER + "refs/tags/v1/x",
        SIGNER.replace("github.com", "githubXcom") + "refs/heads/main",  # dots are literal
        SIGNER.replace("build-images.yml", "build-imagesXyml") + "refs/heads/main",
        SIGNER.replace(REPO, REPO + "-fork") + "refs/heads/main",
        "https://evil.example/" + SIGNER + "refs/heads/main",  # anchored at the start
    ],
)
def test_the_identity_refuses_any_other_ref_or_signer(identity):
    assert not re.search(workflow_identity(), identity)


def test_the_handbook_shows_the_workflows_identity_and_its_permissions():
    assert f"--certificate-identity-regexp '{workflow_identity()}'" in HANDBOOK
    subjects = re.findall(r'subject: "([^"]+)"', HANDBOOK)
    assert subjects == [SIGNER + "refs/heads/main", SIGNER + "refs/tags/v*"]
    granted = WORKFLOW["jobs"]["build"]["permissions"]
    assert granted["id-token"] == "write"
    permissions = HANDBOOK[HANDBOOK.index("- Least permissions") :].split("\n- ")[0]
    for name, level in granted.items():
        assert f"`{name}: {level}`" in permissions
