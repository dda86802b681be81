from pathlib import Path

import pytest

from moltbuild.errors import ConfigError
from moltbuild.settings import MASK, Secret, load_settings, parse_env_file

TOOL = {"registry": "ghcr.io/ardenone", "backend": "auto"}


def settings(root: Path, environ=None, cli=None, tool=TOOL):
    return load_settings(root, environ=environ or {}, cli=cli, tool_config=tool)


def test_defaults_and_pyproject_sources(tmp_path):
    s = settings(tmp_path, tool={"registry": "example.org/team"})
    assert s["MOLTBUILD_REGISTRY"] == "example.org/team"
    assert s.source("MOLTBUILD_REGISTRY") == "pyproject.toml [tool.moltbuild] registry"
    assert s["MOLTBUILD_BACKEND"] == "auto"
    assert s.source("MOLTBUILD_BACKEND") == "default"


def test_precedence_flag_env_local_env_pyproject(tmp_path):
    (tmp_path / ".env").write_text("MOLTBUILD_REGISTRY=from-env-file/x\nMOLTBUILD_BASE_MIRROR=m:1/p\n")
    (tmp_path / ".env.local").write_text("# mine\nMOLTBUILD_REGISTRY=from-local/x\n")
    s = settings(tmp_path)
    assert (s["MOLTBUILD_REGISTRY"], s.source("MOLTBUILD_REGISTRY")) == ("from-local/x", ".env.local:2")
    assert s.source("MOLTBUILD_BASE_MIRROR") == ".env:2"
    s = settings(tmp_path, environ={"MOLTBUILD_REGISTRY": "from-process/x"})
    assert (s["MOLTBUILD_REGISTRY"], s.source("MOLTBUILD_REGISTRY")) == ("from-process/x", "environment")
    s = settings(
        tmp_path,
        environ={"MOLTBUILD_REGISTRY": "from-process/x"},
        cli={"MOLTBUILD_REGISTRY": ("flag/x", "--registry")},
    )
    assert (s["MOLTBUILD_REGISTRY"], s.source("MOLTBUILD_REGISTRY")) == ("flag/x", "flag --registry")


def test_flag_given_as_none_does_not_override(tmp_path):
    s = settings(tmp_path, environ={"MOLTBUILD_BACKEND": "buildah"}, cli={"MOLTBUILD_BACKEND": None})
    assert s["MOLTBUILD_BACKEND"] == "buildah"


def test_secret_is_masked_everywhere():
    token = Secret("ghp_canary123")
    assert str(token) == MASK and repr(token) == MASK
    assert f"{token}" == MASK and f"{token:>6}" == "  " + MASK
    assert "canary" not in str([token]) and "canary" not in str({"t": token})
    assert token.reveal() == "ghp_canary123"
    assert not Secret("")


def test_secret_settings_are_secret_type_and_listed(tmp_path):
    (tmp_path / ".env.local").write_text("GITHUB_TOKEN=ghp_canary\nREGISTRY_PASSWORD='p w'\n")
    s = settings(tmp_path)
    assert isinstance(s["GITHUB_TOKEN"], Secret)
    assert sorted(s.secrets) == ["ghp_canary", "p w"]
    assert all("canary" not in value for _, value, _ in s.as_rows())


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("A=1\nthis is bad\n", 2, "cannot parse"),
        ('A=1\n\nB="unterminated\n', 3, "cannot parse"),
        ("GITHUB_TOKEN\n", 1, "has no `=`"),
        ("=secretvalue\n", 1, "cannot parse"),
    ],
)
def test_malformed_env_file_names_file_and_line(tmp_path, text, line, fragment):
    path = tmp_path / ".env.local"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        parse_env_file(path)
    assert f".env.local:{line}:" in err.value.message
    assert fragment in err.value.message
    assert "secretvalue" not in err.value.message and "unterminated" not in err.value.message


def test_bad_choice_names_key_and_source(tmp_path):
    with pytest.raises(ConfigError, match=r"MOLTBUILD_BACKEND='podman' \(from environment\)"):
        settings(tmp_path, environ={"MOLTBUILD_BACKEND": "podman"})


def test_unknown_moltbuild_key_warns_with_closest(tmp_path):
    (tmp_path / ".env.local").write_text("MOLTBUILD_REGISTERY=x/y\n")
    s = settings(tmp_path, environ={"MOLTBUILD_BAKEND": "auto", "HOME": "/root"})
    assert "unknown setting MOLTBUILD_REGISTERY in .env.local; did you mean MOLTBUILD_REGISTRY?" in s.warnings
    assert any("MOLTBUILD_BAKEND" in w and "MOLTBUILD_BACKEND" in w for w in s.warnings)
    assert not any("HOME" in w for w in s.warnings)


def test_insecure_registries_list(tmp_path):
    s = settings(tmp_path, environ={"MOLTBUILD_INSECURE_REGISTRIES": " 127.0.0.1:5000, reg:80 ,"})
    assert s.insecure_registries == ["127.0.0.1:5000", "reg:80"]


def test_overrides_have_their_own_source_above_the_environment_below_flags(tmp_path):
    over = {"MOLTBUILD_REGISTRY": ("127.0.0.1:5000/ardenone", "pipeline: embedded registry")}
    env = {"MOLTBUILD_REGISTRY": "from-process/x"}
    s = load_settings(tmp_path, environ=env, overrides=over, tool_config=TOOL)
    assert (s["MOLTBUILD_REGISTRY"], s.source("MOLTBUILD_REGISTRY")) == over["MOLTBUILD_REGISTRY"]
    s = load_settings(
        tmp_path,
        environ=env,
        overrides=over,
        cli={"MOLTBUILD_REGISTRY": ("f/x", "--registry")},
        tool_config=TOOL,
    )
    assert s.source("MOLTBUILD_REGISTRY") == "flag --registry"
    assert env == {"MOLTBUILD_REGISTRY": "from-process/x"}


def test_an_empty_value_means_unset_in_every_layer(tmp_path):
    """The copied template has `MOLTBUILD_REGISTRY=`: it must not outrank the pyproject default."""
    (tmp_path / ".env.local").write_text("MOLTBUILD_REGISTRY=\nMOLTBUILD_BACKEND=\n")
    s = settings(tmp_path, environ={"MOLTBUILD_BASE_MIRROR": ""})
    assert s["MOLTBUILD_REGISTRY"] == "ghcr.io/ardenone" and s.source("MOLTBUILD_REGISTRY").startswith(
        "pyproject"
    )
    assert s["MOLTBUILD_BACKEND"] == "auto" and s.source("MOLTBUILD_BASE_MIRROR") == "default"


@pytest.mark.parametrize(
    "value, on",
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        ("On", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("OFF", False),
        ("", False),
    ],
)
def test_one_truthiness_rule_for_every_on_off_setting(tmp_path, value, on):
    for key in ("MOLTBUILD_KEEP_IMAGES", "MOLTBUILD_VERBOSE", "MOLTBUILD_TRACEBACK", "MOLTBUILD_KANIKO_KEEP"):
        assert settings(tmp_path, environ={key: value}).flag(key) is on


def test_an_on_off_setting_refuses_anything_else_naming_key_and_source(tmp_path):
    (tmp_path / ".env.local").write_text("MOLTBUILD_KEEP_IMAGES=sometimes\n")
    with pytest.raises(ConfigError) as err:
        settings(tmp_path)
    assert err.value.message.startswith("MOLTBUILD_KEEP_IMAGES='sometimes' (from .env.local:1)")
    assert "1/true/yes/on or 0/false/no/off" in err.value.message


def test_traceback_is_a_known_setting(tmp_path):
    found = settings(tmp_path, environ={"MOLTBUILD_TRACEBACK": "1", "MOLTBUILD_TRACEBAK": "1"})
    assert found.flag("MOLTBUILD_TRACEBACK") is True
    assert not [w for w in found.warnings if w.startswith("unknown setting MOLTBUILD_TRACEBACK ")]
    assert any("MOLTBUILD_TRACEBAK" in w and "did you mean MOLTBUILD_TRACEBACK" in w for w in found.warnings)


@pytest.mark.parametrize("raw", ["inf", "1e400", "nan", "-inf", "0", "soon"])
def test_seconds_refuse_what_no_deadline_can_reach_in_one_line(tmp_path, raw):
    s = settings(tmp_path, environ={"MOLTBUILD_IDLE_TIMEOUT": raw})
    with pytest.raises(ConfigError) as exc:
        s.seconds("MOLTBUILD_IDLE_TIMEOUT")
    line = str(exc.value)
    assert "\n" not in line and line.startswith(f"MOLTBUILD_IDLE_TIMEOUT={raw!r} (from environment)")
    assert line.endswith("e.g. 60")
    assert (
        settings(tmp_path, environ={"MOLTBUILD_IDLE_TIMEOUT": "2.5"}).seconds("MOLTBUILD_IDLE_TIMEOUT") == 2.5
    )
