"""One reader for on/off and enum settings, one run context per command: each rule that had drifted
between modules (CI, GITHUB_ACTIONS, MOLTBUILD_ATTEST, DOCKER_BUILDKIT) gives one answer everywhere."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from moltbuild.backends.selection import make_backend
from moltbuild.errors import ConfigError
from moltbuild.flows import attest
from moltbuild.flows.context import Session
from moltbuild.settings import load_settings
from moltbuild.supply.provenance import builder
from moltbuild.system.host import detect_place
from moltbuild.system.processes import Runner
from tests.unit.verdicts import storage_verdict

IMAGES = """
[tool.moltbuild]
registry = "reg.example/ns"
[tool.moltbuild.images.web]
repository = "web"
context = "web"
"""


def session(root: Path, **environ: str) -> Session:
    settings = load_settings(root, environ=environ)
    return Session(settings=settings, runner=Runner(out=lambda _: None, environ=environ), environ=environ)


@pytest.mark.parametrize(
    ("value", "ci"),
    [
        ("false", None),
        ("FALSE", None),
        ("0", None),
        ("no", None),
        ("true", "ci"),
        ("1", "ci"),
        ("woodpecker", "ci"),
    ],
)
def test_ci_has_one_answer_in_settings_the_place_probe_and_the_run_context(tmp_path, value, ci):
    assert load_settings(tmp_path, environ={"CI": value}, tool_config={}).ci == ci
    assert detect_place({"CI": value}, tmp_path).ci == ci
    assert session(tmp_path, CI=value).place.ci == ci


@pytest.mark.parametrize(("value", "live"), [("false", True), ("0", True), ("true", False), ("1", False)])
def test_ci_false_keeps_the_live_display_that_ci_turns_off(tmp_path, monkeypatch, value, live):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    made = Session.create(environ={"CI": value, "TERM": "xterm"}, project_root=tmp_path)
    assert (made.runner.console._board is not None) is live  # the live status board


@pytest.mark.parametrize(("value", "github"), [("true", True), ("True", True), ("1", True), ("false", False)])
def test_github_actions_is_read_alike_by_the_place_probe_and_provenance(tmp_path, value, github):
    environ = {"GITHUB_ACTIONS": value, "GITHUB_REPOSITORY": "o/r", "GITHUB_RUN_ID": "7"}
    assert (detect_place(environ, tmp_path).ci == "github-actions") is github
    assert builder(environ, "buildah")[0].startswith("https://github.com/") is github


@pytest.mark.parametrize(
    ("value", "choice"),
    [("ON", "on"), ("yes", "on"), ("1", "on"), ("Off", "off"), ("no", "off"), ("0", "off"), ("AUTO", "auto")],
)
def test_attest_is_parsed_once_any_case_on_off_words_included(tmp_path, value, choice):
    s = load_settings(tmp_path, environ={"MOLTBUILD_ATTEST": value}, tool_config={})
    assert s.choice("MOLTBUILD_ATTEST") == choice
    assert s["MOLTBUILD_ATTEST"] == choice  # the canonical spelling for every reader
    assert s.source("MOLTBUILD_ATTEST") == "environment"


def test_a_bogus_enum_or_on_off_value_is_one_line_naming_the_key_and_the_accepted_values(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ={"MOLTBUILD_ATTEST": "bogus"}, tool_config={})
    assert caught.value.message == "MOLTBUILD_ATTEST='bogus' (from environment) must be one of auto, on, off"
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ={"MOLTBUILD_KEEP_IMAGES": "maybe"}, tool_config={})
    assert caught.value.message == (
        "MOLTBUILD_KEEP_IMAGES='maybe' (from environment) must be one of 1/true/yes/on or 0/false/no/off"
    )
    (tmp_path / ".env.local").write_text("MOLTBUILD_IMAGE_FORMAT=tar\n")
    with pytest.raises(
        ConfigError, match=r"^MOLTBUILD_IMAGE_FORMAT='tar' \(from .env.local:1\) must be one of"
    ):
        load_settings(tmp_path, environ={}, tool_config={})


def test_the_attest_flow_reads_the_parsed_choice(tmp_path):
    with pytest.raises(ConfigError, match=r"^MOLTBUILD_ATTEST=on but syft and cosign not installed"):
        attest.preflight(session(tmp_path, MOLTBUILD_ATTEST="ON", PATH=str(tmp_path)))
    assert attest.wanted(session(tmp_path, MOLTBUILD_ATTEST="no", PATH=str(tmp_path))) is False


def test_enum_and_flag_readers_refuse_keys_of_another_kind(tmp_path):
    s = load_settings(
        tmp_path, environ={"MOLTBUILD_BACKEND": "Docker", "MOLTBUILD_VERBOSE": "YES"}, tool_config={}
    )
    assert s.choice("MOLTBUILD_BACKEND") == "docker" and s.flag("MOLTBUILD_VERBOSE") is True
    with pytest.raises(KeyError):
        s.flag("MOLTBUILD_ATTEST")
    with pytest.raises(KeyError):
        s.choice("MOLTBUILD_VERBOSE")


@pytest.mark.parametrize(("value", "buildkit"), [("TRUE", True), ("yes", True), ("0", False), ("", False)])
def test_docker_buildkit_uses_the_one_on_off_rule(tmp_path, value, buildkit):
    settings = load_settings(tmp_path, environ={}, tool_config={})
    b = make_backend("docker", Runner(environ={"DOCKER_BUILDKIT": value}), settings, storage_verdict())
    b.__dict__["has_buildx"] = False
    assert b.buildkit is buildkit


def test_docker_buildkit_bogus_is_a_config_error_naming_it(tmp_path):
    settings = load_settings(tmp_path, environ={}, tool_config={})
    b = make_backend("docker", Runner(environ={"DOCKER_BUILDKIT": "sure"}), settings, storage_verdict())
    b.__dict__["has_buildx"] = False
    with pytest.raises(ConfigError, match=r"^DOCKER_BUILDKIT='sure' "):
        _ = b.buildkit


def test_a_runner_needs_an_explicit_environment():
    with pytest.raises(TypeError, match="environ"):
        Runner()  # type: ignore[call-arg]
    assert Runner(environ={"A": "1"}).environ == {"A": "1"}


def project(root: Path) -> Path:
    (root / "pyproject.toml").write_text(IMAGES)
    (root / "web").mkdir()
    (root / "web" / "Dockerfile").write_text("FROM scratch\n")
    return root


def test_a_derived_context_keeps_what_it_can_and_never_mutates_the_original(tmp_path):
    s = session(project(tmp_path))
    images, registries = s.images, s.registries
    quiet = s.with_runner(s.runner.to_stderr())
    assert quiet.runner is not s.runner and s.runner.console is not quiet.runner.console
    assert quiet.images is images and quiet.registries is registries and quiet.settings is s.settings
    over = s.with_overrides({"MOLTBUILD_REGISTRY": ("127.0.0.1:5000/ns", "pipeline: embedded registry")})
    assert over.runner is s.runner and over.images is images
    assert over.settings["MOLTBUILD_REGISTRY"] == "127.0.0.1:5000/ns"
    assert over.registries is not registries and over.registries.settings is over.settings
    assert s.settings["MOLTBUILD_REGISTRY"] == "reg.example/ns"


def test_the_image_list_is_read_once_per_context(tmp_path):
    s = session(project(tmp_path))
    first = s.images
    (tmp_path / "pyproject.toml").write_text("")  # a later read would find no images
    assert s.images is first and list(first) == ["web"]
