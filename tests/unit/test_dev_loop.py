"""invoke dev: events as JSON lines and console lines, the dev namespace's name, the loop's fast
settings and dev tags, and `--dry-run` (what it would build and apply; nothing created)."""

from __future__ import annotations

import json

import pytest

from moltbuild.dev import choose
from moltbuild.dev.events import Printer, as_json, as_line
from moltbuild.dev.loop import dev_tag
from moltbuild.dev.target import Event
from moltbuild.errors import ConfigError
from moltbuild.settings import load_settings
from tests.unit.test_cli import cli, commit_all, one_line_error  # noqa: F401  (the fixture)


def test_an_event_is_one_json_object_with_the_seconds_since_the_change():
    line = as_json(Event("url", "api", 1.23456, {"url": "http://127.0.0.1:4000/", "port": 8000}))
    assert json.loads(line) == {
        "event": "url",
        "image": "api",
        "seconds": 1.23,
        "url": "http://127.0.0.1:4000/",
        "port": 8000,
    }
    assert "\n" not in as_json(Event("failed", "api", 2.0, {"reason": "x", "lines": ["a", "b"]}))


def test_console_lines_are_short_with_the_image_prefix():
    assert as_line(Event("built", "api", 2.04, {"ref": "sha256:ab"})) == "[api] built in 2.0s: ref=sha256:ab"
    assert as_line(Event("log", "web", None, {"line": "GET /"})) == "[web] | GET /"
    assert as_line(Event("stopped", None, 9.0)) == "[dev] stopped in 9.0s"
    failed = as_line(Event("failed", "api", 1.0, {"reason": "exited 1", "lines": ["boom"]}))
    assert failed == "[api] failed in 1.0s: exited 1\n  | boom"


def test_the_printer_writes_one_line_per_event():
    out: list[str] = []
    printer = Printer(out.append, json_lines=True)
    printer(Event("ready", "api", 0.5))
    printer(Event("log", "api", None, {"line": "x"}))
    assert [json.loads(line)["event"] for line in out] == ["ready", "log"]


def test_an_unknown_event_kind_is_refused():
    with pytest.raises(ValueError):
        Event("exploded")


def _settings(tmp_path, **env):
    (tmp_path / "pyproject.toml").write_text('[tool.moltbuild]\nkube_namespace = "shop"\n')
    return load_settings(tmp_path, environ=env)


@pytest.mark.parametrize(
    ("user", "namespace"),
    [
        ("alice", "dev-alice"),
        ("Bob.Smith", "dev-bob-smith"),
        ("x_y__z", "dev-x-y-z"),
        ("a" * 80, "dev-" + "a" * 59),
    ],
)
def test_the_dev_namespace_is_derived_from_the_user_as_a_dns_label(tmp_path, user, namespace):
    assert choose.dev_namespace(_settings(tmp_path), {"USER": user}) == namespace


def test_the_dev_namespace_setting_wins_and_is_checked(tmp_path):
    assert choose.dev_namespace(_settings(tmp_path, MOLTBUILD_DEV_NAMESPACE="mine"), {"USER": "a"}) == "mine"
    with pytest.raises(ConfigError, match=r"MOLTBUILD_DEV_NAMESPACE='My_NS'.*e\.g\. my-ns"):
        choose.dev_namespace(_settings(tmp_path, MOLTBUILD_DEV_NAMESPACE="My_NS"), {})


def test_the_projects_own_namespace_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="'shop' is the project's own namespace"):
        choose.dev_namespace(_settings(tmp_path, MOLTBUILD_DEV_NAMESPACE="shop"), {})


def test_local_is_the_default_target_and_the_flags_exclude_each_other():
    assert choose.pick_target(local=False, cluster=False) == "local"
    assert choose.pick_target(local=False, cluster=True) == "cluster"
    with pytest.raises(ConfigError, match="exclude each other"):
        choose.pick_target(local=True, cluster=True)


def test_loop_builds_are_fast_and_kaniko_needs_the_cluster():
    fast = choose.fast_overrides("cluster", "kaniko")
    assert {k: v for k, (v, _) in fast.items()} == {
        "MOLTBUILD_ATTEST": "off",
        "MOLTBUILD_REGISTRY_CACHE": "0",
        "MOLTBUILD_SMOKE": "0",
        "MOLTBUILD_BACKEND": "kaniko",
    }
    with pytest.raises(ConfigError, match="use it with --cluster"):
        choose.fast_overrides("local", "kaniko")


def test_the_dev_tag_comes_from_the_input_digest():
    assert dev_tag("sha256:" + "ab" * 32) == "dev-" + "ab" * 8


def test_dry_run_shows_the_build_and_what_the_target_would_run_and_creates_nothing(cli):  # noqa: F811
    commit_all(cli.project)
    before = sorted(p.relative_to(cli.project) for p in cli.project.rglob("*") if ".git" not in p.parts)
    result = cli("dev", "--dry-run", "--builder", "buildah")
    assert result.code == 0, result
    assert "dev-" in result.out and "latest" not in result.out.split("image ")[-1]
    assert "[api] + podman run -d the local build of api: ports 127.0.0.1:FREE->8000" in result.out
    assert "[frontend] watch " in result.out and "src/*.css -> /www/" in result.out
    after = sorted(p.relative_to(cli.project) for p in cli.project.rglob("*") if ".git" not in p.parts)
    assert after == before


def test_local_and_cluster_together_is_one_line(cli):  # noqa: F811
    commit_all(cli.project)
    assert "--local and --cluster exclude each other" in one_line_error(cli("dev", "--local", "--cluster"), 2)
