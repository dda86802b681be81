"""Whose keyless signature counts: the workflow's verify step, the handbook's cosign command and its
Kyverno policy all accept this repository's workflow on `main` and `v*` tags, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = yaml.safe_load((ROOT / ".github/workflows/build-images.yml").read_text())
HANDBOOK = (ROOT / "docs/handbook.md").read_text()
SERVER, REPO = "https://github.com", "ardenone/moltbook-org"
SIGNER = f"{SERVER}/{REPO}/.github/workflows/build-images.yml@"


def verify_step() -> dict:
    steps = WORKFLOW["jobs"]["build"]["steps"]
    return next(s for s in steps if "invoke verify" in s.get("run", ""))


def workflow_identity() -> str:
    """What the step's shell makes of the server and repository: dots escaped, then its suffix."""
    step = verify_step()
    assert "sed 's/[.]/\\\\./g'" in step["run"] and '"^$repo$IDENTITY_REF"' in step["run"]
    return "^" + f"{SERVER}/{REPO}".replace(".", r"\.") + step["env"]["IDENTITY_REF"]


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
