"""The nested-overlay failure, reproduced for real (RECIPES.md), and the probe's verdict on it."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
from pathlib import Path

import pytest

from moltbuild.system.host import probe_storage
from tests.conftest import need_root
from tests.integration.conftest import clean_env, invoke

pytestmark = pytest.mark.integration


@pytest.fixture()
def overlay_mount(tmp_path: Path):
    need_root()
    dirs = {n: tmp_path / n for n in ("lower", "upper", "work", "merged")}
    for d in dirs.values():
        d.mkdir()
    libc = ctypes.CDLL(None, use_errno=True)
    opts = f"lowerdir={dirs['lower']},upperdir={dirs['upper']},workdir={dirs['work']}"
    rc = libc.mount(b"overlay", str(dirs["merged"]).encode(), b"overlay", 0, opts.encode())
    assert rc == 0, f"could not mount the outer overlay: {os.strerror(ctypes.get_errno())}"
    yield dirs["merged"]
    libc.umount2(str(dirs["merged"]).encode(), 2)


def test_probe_says_nested_inside_an_overlay_mount(overlay_mount):
    verdict = probe_storage(overlay_mount / "containers" / "storage")
    assert verdict.method == "mount"
    assert verdict.nested and not verdict.overlay_ok
    assert verdict.fstype == "overlay" and "EINVAL" in verdict.detail
    assert not list(overlay_mount.iterdir()), "the probe left its temp dir behind"


def test_probe_says_ok_on_plain_disk(tmp_path):
    need_root()
    verdict = probe_storage(tmp_path / "storage")
    assert verdict.method == "mount"
    assert verdict.overlay_ok and not verdict.nested


def run_invoke(project: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return invoke(project, *args, env=clean_env(**(env or {})), timeout=120)


def test_doctor_reports_nested_only_inside_overlay(project, overlay_mount, tmp_path):
    inside = run_invoke(
        project, "doctor", "--json", env={"MOLTBUILD_STORAGE_ROOT": str(overlay_mount / "storage")}
    )
    assert inside.returncode == 0, inside.stderr
    report = json.loads(inside.stdout)
    assert report["storage"]["nested"] is True
    assert any("nested overlay" in p["problem"] for p in report["problems"])
    outside = run_invoke(project, "doctor", env={"MOLTBUILD_STORAGE_ROOT": str(tmp_path / "plain")})
    assert outside.returncode == 0, outside.stderr
    assert "NESTED" not in outside.stdout and "overlay ok" in outside.stdout
