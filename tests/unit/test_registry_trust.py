"""What the registry client trusts: credentials go only to the registry's own origin (never to a
host a `Link` or `Location` names), bodies are checked against their digest, and a registry that
answers with something else (an HTML login page, a redirect loop) is a one-line RegistryError.
Two stand-ins on different loopback ports: the registry and a second host recording what reaches it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from moltbuild.errors import RegistryError
from tests.unit.test_registry_client import OCI_MANIFEST, FakeRegistry, basic_header, client_for, sha

LOGIN_PAGE = "<html><body><form action='/login'>Sign in</form></body></html>"


@pytest.fixture()
def server(httpserver_ipv4: HTTPServer) -> Iterator[HTTPServer]:
    yield httpserver_ipv4
    httpserver_ipv4.check()


@pytest.fixture()
def other() -> Iterator[HTTPServer]:
    """A second host on another loopback port (a storage backend, or a stranger)."""
    second = HTTPServer(host="127.0.0.1", port=0)
    second.start()
    yield second
    second.clear()
    second.stop()


def gated(respond):
    """A registry handler behind Basic auth: a challenge until the credentials come."""

    def handle(request: Request) -> Response:
        if request.headers.get("Authorization") != basic_header():
            return Response("", 401, {"WWW-Authenticate": 'Basic realm="registry"'})
        return respond(request)

    return handle


def received(host: HTTPServer) -> list[str | None]:
    return [r.headers.get("Authorization") for r, _ in host.log]


# -- credentials stay with their host ---------------------------------------------------------------


def _first_page_linking_to(other: HTTPServer):
    link = f'<http://127.0.0.1:{other.port}/v2/app/tags/list?n=1&last=a>; rel="next"'
    return gated(lambda r: Response(json.dumps({"tags": ["a"]}), 200, {"Link": link}))


def test_basic_credentials_do_not_follow_a_link_to_another_port(server, other):
    server.expect_request("/v2/app/tags/list").respond_with_handler(_first_page_linking_to(other))
    other.expect_request("/v2/app/tags/list").respond_with_json({"tags": ["b"]})
    assert client_for(server, creds=True).tags("app", page_size=1) == ["a", "b"]
    assert received(server) == [None, basic_header()]
    assert received(other) == [None]


@pytest.mark.parametrize("kind", ["Bearer", "Basic"])
def test_a_challenge_from_another_host_is_not_answered_with_our_credentials(server, other, kind):
    server.expect_request("/v2/app/tags/list").respond_with_handler(_first_page_linking_to(other))
    challenge = (
        f'Bearer realm="http://127.0.0.1:{other.port}/token",service="x"' if kind == "Bearer" else "Basic"
    )
    other.expect_request("/v2/app/tags/list").respond_with_data(
        "", status=401, headers={"WWW-Authenticate": challenge}
    )
    other.expect_request("/token").respond_with_json({"token": "t"})
    with pytest.raises(RegistryError, match="401 unauthorized for tags of app"):
        client_for(server, creds=True).tags("app", page_size=1)
    assert received(other) == [None]  # neither a token request nor a Basic answer went there


def test_an_upload_location_on_another_port_gets_no_credentials(server, other):
    digest = sha(b"layer")
    server.expect_request(f"/v2/app/blobs/{digest}", method="HEAD").respond_with_handler(
        gated(lambda r: Response("", 404))
    )
    server.expect_request("/v2/app/blobs/uploads/", method="POST").respond_with_handler(
        gated(lambda r: Response("", 202, {"Location": f"http://127.0.0.1:{other.port}/upload/1"}))
    )
    other.expect_request("/upload/1", method="PUT").respond_with_data("", status=201)
    assert client_for(server, creds=True).push_blob("app", b"layer") == digest
    assert received(other) == [None]


def test_a_blob_redirected_to_storage_on_another_port_gets_no_credentials(server, other):
    digest = sha(b"blob bytes")
    server.expect_request(f"/v2/app/blobs/{digest}").respond_with_handler(
        gated(lambda r: Response("", 307, {"Location": f"http://127.0.0.1:{other.port}/storage/x?sig=1"}))
    )
    other.expect_request("/storage/x").respond_with_data(b"blob bytes")
    assert client_for(server, creds=True).blob("app", digest) == b"blob bytes"
    assert received(server) == [None, basic_header()]
    assert received(other) == [None]


def test_a_redirect_back_to_the_registry_keeps_no_credentials_once_dropped(server, other):
    digest = sha(b"x")
    server.expect_request(f"/v2/app/blobs/{digest}").respond_with_handler(
        gated(lambda r: Response("", 302, {"Location": f"http://127.0.0.1:{other.port}/hop"}))
    )
    back = f"http://127.0.0.1:{server.port}/back"
    other.expect_request("/hop").respond_with_data("", status=302, headers={"Location": back})
    server.expect_request("/back").respond_with_data(b"x")
    assert client_for(server, creds=True).blob("app", digest) == b"x"
    assert received(server) == [None, basic_header(), None]


def test_a_redirect_loop_is_one_line_naming_the_url(server):
    server.expect_request("/v2/app/blobs/sha256:" + "1" * 64).respond_with_data(
        "", status=302, headers={"Location": "/v2/app/blobs/sha256:" + "1" * 64}
    )
    with pytest.raises(RegistryError) as err:
        client_for(server).blob("app", "sha256:" + "1" * 64)
    message = err.value.message
    assert "\n" not in message and "redirect" in message and "/v2/app/blobs/sha256:1111" in message


# -- bodies checked against their digest -------------------------------------------------------------


def test_a_blob_whose_bytes_do_not_match_its_digest_is_refused(server):
    zero = "sha256:" + "0" * 64
    server.expect_request(f"/v2/app/blobs/{zero}").respond_with_data(b"hello")
    with pytest.raises(RegistryError) as err:
        client_for(server).blob("app", zero)
    message = err.value.message
    assert "\n" not in message
    assert f"app@{zero}" in message and sha(b"hello") in message


def test_a_manifest_head_without_a_digest_falls_back_to_get_and_hashes_the_body(server):
    body = b'{"schemaVersion": 2, "mediaType": "y"}'
    server.expect_request("/v2/app/manifests/v1", method="HEAD").respond_with_data(
        "", content_type=OCI_MANIFEST
    )
    server.expect_request("/v2/app/manifests/v1", method="GET").respond_with_data(
        body, content_type=OCI_MANIFEST
    )
    found = client_for(server).manifest("app", "v1")
    assert found is not None and found.digest == sha(body) and found.media_type == OCI_MANIFEST


def test_a_manifest_head_by_digest_answering_another_digest_is_refused(server):
    asked, served = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    server.expect_request(f"/v2/app/manifests/{asked}", method="HEAD").respond_with_data(
        "", headers={"Docker-Content-Digest": served}, content_type=OCI_MANIFEST
    )
    with pytest.raises(RegistryError) as err:
        client_for(server).manifest("app", asked)
    assert asked in err.value.message and served in err.value.message


# -- answers that are not what a registry sends -------------------------------------------------------


@pytest.mark.parametrize("method", ["HEAD", "GET"])
def test_an_html_login_page_for_a_manifest_names_the_url_and_what_came_back(server, method):
    server.expect_request("/v2/app/manifests/v1").respond_with_data(LOGIN_PAGE, content_type="text/html")
    with pytest.raises(RegistryError) as err:
        client_for(server).manifest("app", "v1", method=method)
    message = err.value.message
    assert "\n" not in message and "text/html" in message
    assert f"http://127.0.0.1:{server.port}/v2/app/manifests/v1" in message


@pytest.mark.parametrize("call", ["tags", "catalog"])
def test_an_html_page_where_a_list_is_expected_is_a_registry_error(server, call):
    server.expect_request(re.compile(r"/v2/.*")).respond_with_data(LOGIN_PAGE, content_type="text/html")
    client = client_for(server)
    with pytest.raises(RegistryError) as err:
        client.tags("app") if call == "tags" else client.catalog()
    assert "text/html" in err.value.message and "not JSON" in err.value.message


def test_a_config_blob_that_is_not_json_is_a_registry_error(server):
    reg = FakeRegistry(server)
    reg.add_image("app", "v1")
    (_, digest), _ = next(iter(reg.blobs.items()))
    reg.blobs[("app", digest)] = b"not json"
    # served under its own (correct) digest, so only the parse can object
    manifest = json.loads(reg.manifests[("app", "v1")][1])
    manifest["config"]["digest"] = sha(b"not json")
    reg.blobs[("app", sha(b"not json"))] = b"not json"
    body = json.dumps(manifest).encode()
    reg._store("app", "v1", OCI_MANIFEST, body)
    with pytest.raises(RegistryError, match=r"config blob sha256:\w+ of app is not JSON"):
        client_for(reg).image_config("app", "v1")
