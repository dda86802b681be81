"""Shared fixtures. Under CI=true a missing tool fails the test instead of skipping it."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, why: str) -> None:
    """Skip locally, fail in CI: integration tests must run there."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true but {why}", pytrace=False)
    pytest.skip(why)


def need_tool(*tools: str) -> None:
    for tool in tools:
        need(shutil.which(tool) is not None, f"{tool} is not installed (invoke setup)")


def need_root() -> None:
    need(os.geteuid() == 0, "needs root (mount, buildah storage)")


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """A throwaway copy of the project config (pyproject + app contexts), no .env files."""
    dest = tmp_path / "project"
    dest.mkdir()
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    for name in ("api", "moltbook-frontend", "k8s"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "tasks.py", dest / "tasks.py")
    return dest


@pytest.fixture()
def fake_github():
    """A FAKE GitHub REST API on loopback (tests/support/fake_github.py), 50-150 ms per answer."""
    from tests.support.fake_github import FakeGitHub

    fake = FakeGitHub().start()
    yield fake
    fake.stop()
