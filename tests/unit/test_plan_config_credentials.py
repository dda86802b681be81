from pathlib import Path

import pytest

from moltbuild.errors import ConfigError
from moltbuild.plan.planner import parse_platforms, registry_prefix
from moltbuild.plan.request import image_of, selection
from moltbuild.project import load_images, select_images
from moltbuild.registry.auth import Registries, credentials_for, preflight_push
from moltbuild.settings import load_settings

IMAGES = {
    "api": {"repository": "moltbook-api", "context": "api"},
    "frontend": {"repository": "moltbook-frontend", "context": "fe", "build_args": {"A": 1}},
}


def images(tmp_path: Path, table=None):
    for d in ("api", "fe"):
        (tmp_path / d).mkdir(exist_ok=True)
        (tmp_path / d / "Dockerfile").write_text("FROM scratch\n")
    return load_images(tmp_path, {"images": table or IMAGES})


def test_config_resolves_paths_and_stringifies_build_args(tmp_path):
    found = images(tmp_path)
    assert found["api"].dockerfile == tmp_path / "api" / "Dockerfile"
    assert found["frontend"].build_args == {"A": "1"}


@pytest.mark.parametrize(
    "table, fragment",
    [
        ({"api": {"repository": "r", "context": "api", "dockerfle": "x"}}, "unknown key 'dockerfle'"),
        ({"api": {"context": "api"}}, "needs `repository`"),
        ({"api": {"repository": "r", "context": "nowhere"}}, "context 'nowhere' is not a directory"),
        ({"api": {"repository": "r", "context": "api", "dockerfile": "Nope"}}, "dockerfile 'Nope'"),
    ],
)
def test_config_errors_name_the_table_and_key(tmp_path, table, fragment):
    with pytest.raises(ConfigError, match=r"pyproject.toml \[tool.moltbuild.images.api\].*" + fragment):
        images(tmp_path, table)


def test_selection_flags(tmp_path):
    found = images(tmp_path)
    assert [c.name for c in select_images(found, only=selection("", ["--api-only"]))] == ["api"]
    assert [c.name for c in select_images(found, only=["frontend", " "])] == ["frontend"]
    assert [c.name for c in select_images(found)] == ["api", "frontend"]
    with pytest.raises(ConfigError, match="--api-only and --frontend-only exclude each other"):
        selection("", ["--api-only", "--frontend-only"])
    with pytest.raises(ConfigError, match="unknown image 'web'; known: api, frontend"):
        select_images(found, only=["web"])


def test_a_name_only_flag_names_its_image_and_is_checked_against_the_project(tmp_path):
    """--NAME-only is --only NAME for any NAME: a project without that image says so in one line."""
    assert selection("b,a", ["--web-only"]) == ("b", "a", "web")
    assert selection("web", ["--web-only"]) == ("web",)
    assert image_of("--my-app-only") == "my-app"
    with pytest.raises(
        ConfigError, match=r"unknown image 'web'; known: api, frontend \(the tables of pyproject"
    ):
        select_images(images(tmp_path), only=selection("", ["--web-only"]))


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("ghcr.io", "needs a namespace"),
        ("ardenone/team", "needs a namespace"),
        ("http://reg:5000/ns", "needs a namespace|drop the scheme"),
        ("reg:5000/Team", "must be lowercase"),
        ("127.0.0.1:99999/x", "port 99999 of '127.0.0.1:99999' is not between 1 and 65535"),
        ("[::1]:5000/x", "cannot name a registry by an IPv6 address; use a host name"),
        ("reg.example:0/x", "port 0 of 'reg.example:0' is not between 1 and 65535"),
    ],
)
def test_registry_setting_is_checked_before_any_work(value, fragment):
    with pytest.raises(ConfigError, match=rf"MOLTBUILD_REGISTRY.*({fragment})"):
        registry_prefix(value)
    assert registry_prefix("127.0.0.1:5000/ns/").name == "127.0.0.1:5000/ns"


def test_platforms_flag():
    assert parse_platforms("linux/amd64, linux/arm64/v8") == ["linux/amd64", "linux/arm64/v8"]
    with pytest.raises(ConfigError, match="--platform 'amd64' is not OS/ARCH"):
        parse_platforms("amd64")


def test_credentials_per_registry(tmp_path):
    env = {
        "GITHUB_USERNAME": "octo",
        "GITHUB_TOKEN": "t0ken",
        "REGISTRY_USERNAME": "u",
        "REGISTRY_PASSWORD": "p",
        "MOLTBUILD_REGISTRY": "reg.example:5000/ns",
    }
    s = load_settings(tmp_path, environ=env, tool_config={})
    assert credentials_for("ghcr.io", s).keys == "GITHUB_USERNAME/GITHUB_TOKEN"
    assert credentials_for("reg.example:5000", s).keys == "REGISTRY_USERNAME/REGISTRY_PASSWORD"
    assert "t0ken" not in repr(credentials_for("ghcr.io", s))
    bare = load_settings(tmp_path, environ={}, tool_config={})
    assert credentials_for("reg.example:5000", bare) is None
    with pytest.raises(ConfigError, match=r"ghcr\.io needs GITHUB_TOKEN"):
        preflight_push("ghcr.io", bare, registries=Registries(bare), check_registry=False)
    assert preflight_push("127.0.0.1:5000", bare, registries=Registries(bare), check_registry=False) is None


@pytest.mark.parametrize(
    "env, user, keys",
    [
        ({"GITHUB_TOKEN": "t0ken"}, "moltbuild", "GITHUB_TOKEN"),
        ({"GITHUB_TOKEN": "t0ken", "GITHUB_ACTOR": "octo-bot"}, "octo-bot", "GITHUB_ACTOR/GITHUB_TOKEN"),
        (
            {"GITHUB_TOKEN": "t0ken", "GITHUB_ACTOR": "bot", "GITHUB_USERNAME": "me"},
            "me",
            "GITHUB_USERNAME/GITHUB_TOKEN",
        ),
    ],
)
def test_a_github_token_alone_is_enough_for_ghcr(tmp_path, env, user, keys):
    creds = credentials_for("ghcr.io", load_settings(tmp_path, environ=env, tool_config={}))
    assert (creds.username, creds.keys, creds.password.reveal()) == (user, keys, "t0ken")


def test_source_date_epoch_wins_over_the_commit_time():
    from moltbuild.plan.planner import source_date_epoch
    from moltbuild.plan.tags import GitState

    git = GitState("a" * 40, "main", "main", False, "https://x/y", commit_time=1600000000)
    assert source_date_epoch({}, git) == 1600000000
    assert source_date_epoch({"SOURCE_DATE_EPOCH": "1700000000"}, git) == 1700000000
    with pytest.raises(ConfigError, match="SOURCE_DATE_EPOCH='yesterday' must be whole seconds"):
        source_date_epoch({"SOURCE_DATE_EPOCH": "yesterday"}, git)


def test_build_args_go_only_where_the_dockerfile_declares_them(project):
    """Planning is pure: the facts are made here, no git repository is needed."""
    from moltbuild.dockerfile import Dockerfile
    from moltbuild.plan.facts import GitState, ImageFacts, PlanFacts
    from moltbuild.plan.planner import PlanInputs, make_plan
    from moltbuild.plan.request import BuildRequest
    from moltbuild.project import load_images

    frontend = project / "moltbook-frontend" / "Dockerfile"
    frontend.write_text(frontend.read_text().replace("ARG API_BASE_URL=/api\n", ""))
    api = project / "api" / "Dockerfile"
    api.write_text("\n".join(line for line in api.read_text().splitlines() if not line.startswith("ARG ")))
    git = GitState("a" * 40, "main", "main", False, "https://example.org/x/y", commit_time=1600000000)
    images = tuple(
        ImageFacts(cfg, Dockerfile.read(cfg.dockerfile, cfg.build_args), git)
        for cfg in load_images(project).values()
    )
    settings = load_settings(project, environ={})
    inputs = PlanInputs(settings, PlanFacts(git, images), "buildah", "test")
    plan = {i.name: i for i in make_plan(BuildRequest(smoke=False), inputs).images}
    assert "API_BASE_URL" not in plan["frontend"].build_args  # configured, but no ARG takes it
    assert plan["frontend"].build_args["REVISION"] == "a" * 40
    assert set(plan["frontend"].build_args) == {"VERSION", "REVISION", "CREATED", "SOURCE"}
    (note,) = plan["frontend"].notes
    assert "API_BASE_URL" in note and "not passed" in note
    assert plan["api"].build_args == {} and plan["api"].notes == ()  # declares none, configures none
