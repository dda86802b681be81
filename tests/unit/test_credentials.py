"""moltbuild.registry.auth: which credentials go to which registry, the client built from settings, and
the push preflight against a real HTTP registry endpoint (pytest-httpserver on 127.0.0.1)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from moltbuild.errors import ConfigError, RegistryError
from moltbuild.registry.auth import Credentials, Registries, credentials_for, preflight_push, registry_client
from moltbuild.settings import Secret, load_settings

PASSWORD = "pr3flight-s3cret"


@pytest.fixture()
def server(httpserver_ipv4: HTTPServer) -> Iterator[HTTPServer]:
    yield httpserver_ipv4
    httpserver_ipv4.check()


def settings(tmp_path: Path, **env: str):
    return load_settings(tmp_path, environ=env, tool_config={})


def with_creds(tmp_path: Path, host: str, user: str, password: str):
    """Settings whose registry is `host`, with REGISTRY_USERNAME/PASSWORD for it."""
    return settings(
        tmp_path, MOLTBUILD_REGISTRY=f"{host}/ns", REGISTRY_USERNAME=user, REGISTRY_PASSWORD=password
    )


def preflight(host: str, settings_, **kw):
    """preflight_push through a run's registry clients, as a flow calls it."""
    return preflight_push(host, settings_, registries=Registries(settings_), **kw)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    "host, env, expected",
    [
        (
            "ghcr.io",
            {"GITHUB_TOKEN": "gh", "REGISTRY_USERNAME": "u", "REGISTRY_PASSWORD": "p"},
            ("moltbuild", "gh", "GITHUB_TOKEN"),
        ),
        (
            "ghcr.io",
            {"REGISTRY_USERNAME": "u", "REGISTRY_PASSWORD": "p"},
            ("u", "p", "REGISTRY_USERNAME/REGISTRY_PASSWORD"),
        ),
        (
            "ghcr.io",
            {"GITHUB_TOKEN": "gh", "GITHUB_ACTOR": "bot"},
            ("bot", "gh", "GITHUB_ACTOR/GITHUB_TOKEN"),
        ),
        ("reg.example:5000", {"GITHUB_TOKEN": "gh", "GITHUB_USERNAME": "octo"}, None),
        ("reg.example:5000", {"REGISTRY_USERNAME": "u"}, None),
        ("reg.example:5000", {"REGISTRY_PASSWORD": "p"}, None),
    ],
)
def test_credentials_for_picks_the_pair_meant_for_the_host(tmp_path, host, env, expected):
    creds = credentials_for(host, settings(tmp_path, MOLTBUILD_REGISTRY=f"{host}/ns", **env))
    got = None if creds is None else (creds.username, creds.password.reveal(), creds.keys)
    assert got == expected


def test_registry_credentials_go_only_to_the_configured_registry(tmp_path):
    """Never to another host a kustomization or a --source reference names."""
    env = {"MOLTBUILD_REGISTRY": "reg.example:5000/ns", "REGISTRY_USERNAME": "u", "REGISTRY_PASSWORD": "p"}
    found = settings(tmp_path, **env)
    assert credentials_for("reg.example:5000", found).username == "u"
    assert credentials_for("stranger.example", found) is None
    assert credentials_for("reg.example:5001", found) is None
    listed = settings(tmp_path, **env, MOLTBUILD_CREDENTIAL_HOSTS="mirror.example, reg.example:5001")
    assert credentials_for("mirror.example", listed).username == "u"  # the user listed it
    assert credentials_for("reg.example:5001", listed).username == "u"
    assert credentials_for("stranger.example", listed) is None


def test_credentials_repr_and_format_hide_the_secret():
    creds = Credentials("octo", Secret(PASSWORD), "GITHUB_TOKEN")
    assert repr(creds) == "Credentials('octo', ****, from GITHUB_TOKEN)"
    assert PASSWORD not in f"{creds} {creds!r} {creds.password} {creds.password!r}"


def test_registry_client_takes_insecure_hosts_ca_and_credentials_from_settings(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    s = settings(
        tmp_path, MOLTBUILD_INSECURE_REGISTRIES="reg.lan:5000, other:1", MOLTBUILD_REGISTRY_CA=str(ca)
    )
    creds = Credentials("u", Secret(PASSWORD), "REGISTRY_USERNAME/REGISTRY_PASSWORD")
    listed = registry_client("reg.lan:5000", s, creds)
    assert (listed.base, listed.verify, listed.username) == ("http://reg.lan:5000", str(ca), "u")
    assert listed.password.reveal() == PASSWORD
    bare = registry_client("reg.example", settings(tmp_path))
    assert (bare.base, bare.verify, bare.has_credentials) == ("https://reg.example", True, False)


def test_preflight_passes_when_the_registry_accepts_the_credentials(tmp_path, server):
    host = f"127.0.0.1:{server.port}"
    server.expect_request("/v2/", headers={"Authorization": basic("u", PASSWORD)}).respond_with_json({})
    server.expect_request("/v2/").respond_with_data("", 401, {"WWW-Authenticate": 'Basic realm="r"'})
    creds = preflight(
        host,
        settings(
            tmp_path, REGISTRY_USERNAME="u", REGISTRY_PASSWORD=PASSWORD, MOLTBUILD_REGISTRY=f"{host}/ns"
        ),
    )
    assert (creds.username, creds.keys) == ("u", "REGISTRY_USERNAME/REGISTRY_PASSWORD")
    assert [r.headers.get("Authorization") for r, _ in server.log] == [None, basic("u", PASSWORD)]


def test_preflight_without_credentials_where_the_registry_wants_them_is_a_config_error(tmp_path, server):
    host = f"127.0.0.1:{server.port}"
    server.expect_request("/v2/").respond_with_data("", 401, {"WWW-Authenticate": 'Basic realm="r"'})
    with pytest.raises(ConfigError) as caught:
        preflight(host, settings(tmp_path))
    assert caught.value.message == (
        f"{host} requires credentials; set REGISTRY_USERNAME and REGISTRY_PASSWORD "
        "(in .env.local or the environment)"
    )
    assert caught.value.exit_code == 2


def test_preflight_with_rejected_credentials_names_their_source_and_user_not_the_password(tmp_path, server):
    host = f"127.0.0.1:{server.port}"
    server.expect_request("/v2/").respond_with_data("", 401, {"WWW-Authenticate": 'Basic realm="r"'})
    with pytest.raises(RegistryError) as caught:
        preflight(
            host,
            settings(
                tmp_path, REGISTRY_USERNAME="ci", REGISTRY_PASSWORD=PASSWORD, MOLTBUILD_REGISTRY=f"{host}/ns"
            ),
        )
    assert caught.value.message == (
        f"{host} rejected the credentials from REGISTRY_USERNAME/REGISTRY_PASSWORD (user 'ci'); check them"
    )
    assert PASSWORD not in caught.value.message


def test_preflight_reports_a_refusing_token_service(tmp_path, server):
    host = f"127.0.0.1:{server.port}"
    challenge = f'Bearer realm="http://{host}/token",service="s"'
    server.expect_request("/v2/").respond_with_data("", 401, {"WWW-Authenticate": challenge})
    server.expect_request("/token").respond_with_data("", 401)
    with pytest.raises(RegistryError, match=rf"^{host}: token service refused user 'ci' for access; check"):
        preflight(
            host,
            settings(
                tmp_path, REGISTRY_USERNAME="ci", REGISTRY_PASSWORD=PASSWORD, MOLTBUILD_REGISTRY=f"{host}/ns"
            ),
        )


def test_preflight_on_an_overloaded_registry_says_nothing_was_built_after_the_retries(tmp_path, server):
    host = f"127.0.0.1:{server.port}"
    server.expect_request("/v2/").respond_with_data("busy", 503, {"Retry-After": "0.01"})
    with pytest.raises(RegistryError) as caught:
        preflight(host, settings(tmp_path, MOLTBUILD_INSECURE_REGISTRIES=host))
    assert caught.value.message.startswith(f"{host}: GET /v2/ answered HTTP 503 after retries")
    assert "nothing was built or pushed" in caught.value.message
    assert len(server.log) == 5  # the client's default: one attempt and four retries


def test_preflight_on_something_that_is_not_a_registry(tmp_path, server):
    host = f"127.0.0.1:{server.port}"
    server.expect_request("/v2/").respond_with_data("<html>", 404)
    with pytest.raises(
        RegistryError, match=rf"^{host}: GET /v2/ answered HTTP 404; is this a container registry"
    ):
        preflight(host, settings(tmp_path, MOLTBUILD_INSECURE_REGISTRIES=host))


def test_preflight_anonymous_open_registry_and_the_no_check_path(tmp_path, server):
    host = f"127.0.0.1:{server.port}"
    server.expect_request("/v2/").respond_with_json({})
    assert preflight(host, settings(tmp_path)) is None
    assert len(server.log) == 1 and "Authorization" not in server.log[0][0].headers
    creds = preflight(
        host,
        with_creds(tmp_path, host, "u", "p"),
        check_registry=False,
    )
    assert creds.username == "u" and len(server.log) == 1  # not contacted
    with pytest.raises(
        ConfigError, match=r"^pushing to ghcr\.io needs GITHUB_TOKEN \(scope write:packages\)"
    ):
        preflight("ghcr.io", settings(tmp_path), check_registry=True)  # before any request
