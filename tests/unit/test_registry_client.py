"""moltbuild.registry.client.RegistryClient over real HTTP: a small in-memory OCI distribution registry
(and a token service) served by pytest-httpserver on 127.0.0.1. No root, no daemon, no fixed port."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import ssl
from collections.abc import Iterator

import pytest
import trustme
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from moltbuild.errors import RegistryError
from moltbuild.registry.client import MANIFEST_TYPES, Manifest, RegistryClient
from moltbuild.settings import Secret
from moltbuild.system.retry import Clock, RetryPolicy

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
USER = "builder"
PASSWORD = "s3cr3t-Pa55w0rd-do-not-print"
REMOTE = "registry.example:5000"  # a name the tests never contact
ONCE = RetryPolicy(attempts=1)  # no retries


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def errors(code: str, message: str = "") -> str:
    return json.dumps({"errors": [{"code": code, "message": message or code.lower(), "detail": None}]})


def basic_header(user: str = USER, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class FakeRegistry:
    """Enough of the distribution API for the client: manifests, blobs, cross-repository mounts,
    chunkless uploads, tags and catalog with `Link` pagination, and optional Basic or Bearer auth
    with a token service (/token) that grants exactly the scopes asked for."""

    def __init__(self, server: HTTPServer, *, auth: str | None = None, mount: bool = True):
        self.server = server
        self.host = f"127.0.0.1:{server.port}"
        self.auth = auth
        self.mount = mount
        self.anonymous_tokens = True
        self.blobs: dict[tuple[str, str], bytes] = {}
        self.manifests: dict[tuple[str, str], tuple[str, bytes]] = {}
        self.uploads: dict[str, str] = {}
        self.tokens: dict[str, list[str]] = {}
        self.token_requests: list[dict] = []
        server.expect_request(re.compile(r"^/(v2/.*|token)$")).respond_with_handler(self.handle)

    # -- content ----------------------------------------------------------------------------

    def add_image(self, repo: str, tag: str | None = None, *, arch: str = "amd64") -> tuple[str, bytes]:
        config = json.dumps({"architecture": arch, "os": "linux", "config": {"Labels": {"arch": arch}}})
        layers = [f"{arch} layer {i}".encode() * (i + 1) for i in range(2)]
        self.blobs[(repo, sha(config.encode()))] = config.encode()
        for layer in layers:
            self.blobs[(repo, sha(layer))] = layer
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": sha(config.encode()), "size": len(config)},
                "layers": [{"mediaType": OCI_LAYER, "digest": sha(x), "size": len(x)} for x in layers],
            }
        ).encode()
        self._store(repo, tag or sha(body), OCI_MANIFEST, body)
        return sha(body), body

    def add_index(
        self, repo: str, tag: str, arches: tuple[str, ...] = ("amd64", "arm64")
    ) -> tuple[str, bytes]:
        children = []
        for arch in arches:
            digest, body = self.add_image(repo, arch=arch)
            children.append(
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": digest,
                    "size": len(body),
                    "platform": {"os": "linux", "architecture": arch},
                }
            )
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}).encode()
        self._store(repo, tag, OCI_INDEX, body)
        return sha(body), body

    def _store(self, repo: str, reference: str, media_type: str, body: bytes) -> None:
        self.manifests[(repo, reference)] = (media_type, body)
        self.manifests[(repo, sha(body))] = (media_type, body)

    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request the registry (not the token service) answered."""
        return [(r.method, r.full_path.rstrip("?")) for r, _ in self.server.log if r.path != "/token"]

    # -- auth -------------------------------------------------------------------------------

    def _challenge(self, scope: str | None, error: str | None = None) -> Response:
        if self.auth == "basic":
            header = 'Basic realm="fake-registry"'
        else:
            header = f'Bearer realm="http://{self.host}/token",service="fake-registry"'
            header += f',scope="{scope}"' if scope else ""
            header += f',error="{error}"' if error else ""
        return Response(errors("UNAUTHORIZED", "authentication required"), 401, {"WWW-Authenticate": header})

    def _denied(self, request: Request, resource: str | None, action: str) -> Response | None:
        if self.auth is None:
            return None
        given = request.headers.get("Authorization", "")
        scope = f"{resource}:{action}" if resource else None
        if self.auth == "basic":
            return None if given == basic_header() else self._challenge(scope)
        granted = self.tokens.get(given.removeprefix("Bearer "))
        if granted is None:
            return self._challenge(scope)
        if resource is None:
            return None
        for item in granted:
            kind_name, _, actions = item.rpartition(":")
            if kind_name == resource and (action in actions.split(",") or actions == "*"):
                return None
        return self._challenge(scope, "insufficient_scope")

    def _token(self, request: Request) -> Response:
        given = request.headers.get("Authorization", "")
        scopes = request.args.getlist("scope")
        self.token_requests.append({"scope": scopes, "service": request.args.get("service"), "auth": given})
        if (given and given != basic_header()) or (not given and not self.anonymous_tokens):
            return Response(errors("DENIED", "bad credentials"), 401)
        token = f"token-{len(self.tokens) + 1}"
        self.tokens[token] = scopes
        return Response(json.dumps({"token": token, "expires_in": 300}), 200, content_type="application/json")

    # -- routes -----------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        path, method = request.path, request.method
        if path == "/token":
            return self._token(request)
        if path == "/v2/":
            return self._denied(request, None, "pull") or Response("{}", 200)
        if path == "/v2/_catalog":
            names = sorted({repo for repo, _ in self.manifests})
            return self._denied(request, "registry:catalog", "*") or self._page(
                request, "repositories", names
            )
        match = re.fullmatch(r"/v2/(?P<name>.+)/(?P<kind>manifests|blobs|tags)/(?P<rest>.*)", path)
        assert match, f"unexpected path {path}"
        name, kind, rest = match["name"], match["kind"], match["rest"]
        action = "pull" if method in ("GET", "HEAD") else "push"
        denied = self._denied(request, f"repository:{name}", action)
        if denied:
            return denied
        if kind == "tags":
            tags = sorted(ref for repo, ref in self.manifests if repo == name and ":" not in ref)
            if not tags:
                return Response(errors("NAME_UNKNOWN", "repository name not known to registry"), 404)
            return self._page(request, "tags", tags, name=name)
        if kind == "manifests":
            return self._manifest(request, name, rest)
        if rest.startswith("uploads/"):
            return self._upload(request, name, rest.removeprefix("uploads/"))
        if (name, rest) not in self.blobs:
            return Response(errors("BLOB_UNKNOWN", "blob unknown to registry"), 404)
        data = self.blobs[(name, rest)]
        return Response(data, 200, {"Docker-Content-Digest": rest}, content_type="application/octet-stream")

    def _page(self, request: Request, key: str, items: list[str], *, name: str | None = None) -> Response:
        last, n = request.args.get("last"), request.args.get("n", type=int)
        rest = [i for i in items if last is None or i > last]
        page = rest[:n] if n else rest
        headers = {}
        if n and len(rest) > n:
            base = f"/v2/{name}/tags/list" if name else "/v2/_catalog"
            headers["Link"] = f'<{base}?n={n}&last={page[-1]}>; rel="next"'
        body = {key: page} | ({"name": name} if name else {})
        return Response(json.dumps(body), 200, headers, content_type="application/json")

    def _manifest(self, request: Request, name: str, reference: str) -> Response:
        if request.method == "PUT":
            body = request.get_data()
            media_type = request.headers.get("Content-Type", "")
            doc = json.loads(body)
            refs = [doc["config"], *doc["layers"]] if "config" in doc else doc["manifests"]
            for ref in refs:
                if (name, ref["digest"]) not in self.blobs and (name, ref["digest"]) not in self.manifests:
                    return Response(errors("MANIFEST_BLOB_UNKNOWN", ref["digest"]), 400)
            self._store(name, reference, media_type, body)
            return Response("", 201, {"Docker-Content-Digest": sha(body)})
        if (name, reference) not in self.manifests:
            return Response(errors("MANIFEST_UNKNOWN", "manifest unknown"), 404)
        media_type, body = self.manifests[(name, reference)]
        return Response(body, 200, {"Docker-Content-Digest": sha(body)}, content_type=media_type)

    def _upload(self, request: Request, name: str, upload: str) -> Response:
        if request.method == "POST":
            digest, source = request.args.get("mount"), request.args.get("from")
            if self.mount and (source, digest) in self.blobs:
                self.blobs[(name, digest)] = self.blobs[(source, digest)]
                return Response("", 201, {"Location": f"/v2/{name}/blobs/{digest}"})
            upload_id = f"upload-{len(self.uploads) + 1}"
            self.uploads[upload_id] = name
            return Response("", 202, {"Location": f"/v2/{name}/blobs/uploads/{upload_id}?_state=opaque"})
        assert request.method == "PUT" and request.args.get("_state") == "opaque", "upload state lost"
        data, digest = request.get_data(), request.args["digest"]
        if sha(data) != digest:
            return Response(errors("DIGEST_INVALID", "provided digest did not match uploaded content"), 400)
        self.blobs[(self.uploads.pop(upload), digest)] = data
        return Response("", 201, {"Docker-Content-Digest": digest})


@pytest.fixture()
def server(httpserver_ipv4: HTTPServer) -> Iterator[HTTPServer]:
    """pytest-httpserver bound to 127.0.0.1 (not `localhost`, which may resolve to ::1 first); a
    request nothing expected, or a handler's assertion, fails the test."""
    yield httpserver_ipv4
    httpserver_ipv4.check()


class Naps(list):
    """The client's backoff waits, recorded instead of slept (the policy's clock)."""

    def policy(self, *, retries: int = 0, backoff: float = 0.01, max_wait: float = 60) -> RetryPolicy:
        return RetryPolicy(
            attempts=retries + 1, base=backoff, max_wait=max_wait, clock=Clock(sleep=self.append)
        )


@pytest.fixture()
def sleeps() -> Naps:
    return Naps()


def client_for(
    reg: FakeRegistry | HTTPServer, *, creds: bool = False, retry: RetryPolicy = ONCE, **kwargs
) -> RegistryClient:
    host = reg.host if isinstance(reg, FakeRegistry) else f"127.0.0.1:{reg.port}"
    if creds:
        kwargs.update(username=USER, password=Secret(PASSWORD))
    return RegistryClient(host, insecure_hosts=[host], retry=retry, **kwargs)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- transport: plain HTTP on loopback, TLS -------------------------------------------------------


def test_a_loopback_registry_is_tried_over_https_then_spoken_to_over_plain_http(server):
    reg = FakeRegistry(server)
    digest, _ = reg.add_image("app", "v1")
    client = RegistryClient(reg.host, retry=ONCE)  # not listed as insecure
    assert client.base == f"https://{reg.host}"
    assert client.manifest("app", "v1").digest == digest
    assert client.base == f"http://{reg.host}" and client.plain_http
    assert client.ping() == 200


def test_a_non_loopback_host_speaking_plain_http_names_the_setting_to_change(server):
    client = RegistryClient(REMOTE, retry=ONCE)
    with pytest.raises(RegistryError, match=rf"^{REMOTE} speaks plain HTTP; add it to MOLTBUILD_INSECURE"):
        client.request("GET", f"https://127.0.0.1:{server.port}/v2/")
    assert client.base == f"https://{REMOTE}"  # no silent downgrade for a remote host


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory) -> Iterator[tuple[HTTPServer, str]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ssl_context)
    bundle = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with HTTPServer(host="127.0.0.1", port=0, ssl_context=ssl_context) as tls:
        tls.expect_request("/v2/").respond_with_json({})
        yield tls, str(bundle)


def test_tls_uses_the_given_ca_bundle_and_an_unknown_ca_names_moltbuild_registry_ca(tls_server):
    tls, bundle = tls_server
    host = f"127.0.0.1:{tls.port}"
    assert RegistryClient(host, ca_bundle=bundle, retry=ONCE).ping() == 200
    with pytest.raises(
        RegistryError, match=rf"^{host}: TLS verification failed \(.*\); set MOLTBUILD_REGISTRY_CA"
    ):
        RegistryClient(host, retry=ONCE).ping()


# -- manifests ----------------------------------------------------------------------------------


def test_manifest_head_takes_the_digest_and_type_from_the_headers_and_asks_for_every_type(server):
    server.expect_request("/v2/team/app/manifests/v1", method="HEAD").respond_with_data(
        "",
        headers={"Docker-Content-Digest": "sha256:" + "a" * 64},
        content_type=f"{OCI_INDEX}; charset=utf-8",
    )
    found = client_for(server).manifest("team/app", "v1")
    assert found == Manifest("sha256:" + "a" * 64, OCI_INDEX, b"")
    accept = server.log[0][0].headers["Accept"]
    assert [t.strip() for t in accept.split(",")] == list(MANIFEST_TYPES)


@pytest.mark.parametrize("method", ["HEAD", "GET"])
def test_an_unknown_tag_is_none_not_an_error(server, method):
    reg = FakeRegistry(server)
    reg.add_image("app", "v1")
    assert client_for(reg).manifest("app", "v2", method=method) is None
    assert reg.requests() == [(method, "/v2/app/manifests/v2")]


def test_manifest_get_returns_the_body_and_its_digest(server):
    body = b'{"schemaVersion": 2}'
    server.expect_request("/v2/app/manifests/v1").respond_with_data(
        body, headers={"Docker-Content-Digest": sha(body)}, content_type=OCI_MANIFEST
    )
    assert client_for(server).manifest("app", "v1", method="GET") == Manifest(sha(body), OCI_MANIFEST, body)


@pytest.mark.parametrize("by_digest", [False, True])
def test_a_manifest_whose_bytes_do_not_match_its_digest_is_refused(server, by_digest):
    """A registry (or proxy) serving altered bytes under the expected digest: hashed, refused."""
    honest = b'{"schemaVersion": 2, "layers": []}'
    altered = b'{"schemaVersion": 2, "layers": ["evil"]}'
    reference = sha(honest) if by_digest else "v1"
    server.expect_request(f"/v2/app/manifests/{reference}").respond_with_data(
        altered, headers={"Docker-Content-Digest": sha(honest)}, content_type=OCI_MANIFEST
    )
    with pytest.raises(RegistryError) as err:
        client_for(server).manifest("app", reference, method="GET")
    message = err.value.message
    assert message.startswith(f"127.0.0.1:{server.port}: app:{reference} served a manifest")
    assert sha(altered) in message and sha(honest) in message and "altered" in message


def test_manifest_get_without_a_digest_header_hashes_the_body_it_got(server):
    body = b'{"schemaVersion": 2, "mediaType": "x"}'
    server.expect_request("/v2/app/manifests/v1").respond_with_data(body, content_type=OCI_MANIFEST)
    assert client_for(server).manifest("app", "v1", method="GET").digest == sha(body)


def test_manifest_head_without_a_digest_header_never_invents_one(server):
    body = b'{"schemaVersion": 2, "mediaType": "y"}'
    server.expect_request("/v2/app/manifests/v1", method="HEAD").respond_with_data(
        "", content_type=OCI_MANIFEST
    )
    server.expect_request("/v2/app/manifests/v1", method="GET").respond_with_data(
        body, content_type=OCI_MANIFEST
    )
    found = client_for(server).manifest("app", "v1")
    assert found.media_type == OCI_MANIFEST
    assert found.digest in ("", sha(body))  # unknown, or asked for; never the hash of an empty HEAD body


def test_put_manifest_sends_the_body_and_type_and_returns_the_served_digest(server):
    reg = FakeRegistry(server)
    digest, body = reg.add_image("src", "v1")
    client = client_for(reg)
    assert client.put_manifest("src", "v2", body, OCI_MANIFEST) == digest
    request = server.log[-1][0]
    assert (request.method, request.path, request.get_data()) == ("PUT", "/v2/src/manifests/v2", body)
    assert request.headers["Content-Type"] == OCI_MANIFEST
    assert client.manifest("src", "v2", method="GET") == Manifest(digest, OCI_MANIFEST, body)


def test_put_manifest_without_a_digest_header_returns_the_body_hash(server):
    server.expect_request("/v2/app/manifests/v9", method="PUT").respond_with_data("", status=201)
    assert client_for(server).put_manifest("app", "v9", b"{}", OCI_MANIFEST) == sha(b"{}")


def test_put_manifest_refuses_a_served_digest_that_is_not_the_sent_bytes(server):
    other = sha(b"something else")
    server.expect_request("/v2/app/manifests/v9", method="PUT").respond_with_data(
        "", status=201, headers={"Docker-Content-Digest": other}
    )
    with pytest.raises(RegistryError) as caught:
        client_for(server).put_manifest("app", "v9", b"{}", OCI_MANIFEST)
    assert caught.value.message.count("\n") == 0
    assert f"answered Docker-Content-Digest {other}, but the bytes sent hash to {sha(b'{}')}" in (
        caught.value.message
    )


# -- error bodies -------------------------------------------------------------------------------


BLOB = r"blob sha256:\w{12} of app"


@pytest.mark.parametrize(
    "status, body, expected",
    [
        (
            401,
            errors("UNAUTHORIZED"),
            rf"401 unauthorized for {BLOB} \(no credentials tried\); set REGISTRY_USERNAME/REGISTRY_PASSWORD",
        ),
        (
            403,
            errors("DENIED", "requested access to the resource is denied"),
            rf"403 forbidden for {BLOB}; the credentials lack permission \(a GitHub token needs read:pack",
        ),
        (404, errors("NAME_UNKNOWN"), rf"{BLOB}: repository not found \(name unknown\)$"),
        (404, errors("MANIFEST_UNKNOWN"), rf"{BLOB}: tag or digest not found \(manifest unknown\)$"),
        (
            404,
            errors("BLOB_UNKNOWN", "unknown to registry"),
            rf"{BLOB} answered HTTP 404: .*unknown to registry",
        ),
        (400, "<html>bad gateway config</html>", rf"{BLOB} answered HTTP 400: <html>bad gateway config"),
        (400, "[1, 2]", rf"{BLOB} answered HTTP 400: \[1, 2\]$"),
    ],
)
def test_error_answers_become_messages_naming_the_host_and_the_fix(server, status, body, expected):
    digest = "sha256:" + "c" * 64
    server.expect_request(f"/v2/app/blobs/{digest}").respond_with_data(body, status=status)
    client = client_for(server)
    with pytest.raises(RegistryError, match=rf"^127\.0\.0\.1:{server.port}: {expected}"):
        client.blob("app", digest)
    assert len(server.log) == 1  # none of these is worth a retry


def test_a_forbidden_push_asks_for_write_packages_and_a_rejected_manifest_says_so(server):
    server.expect_request("/v2/app/manifests/v1", method="PUT").respond_with_data(
        errors("DENIED"), status=403
    )
    server.expect_request("/v2/app/manifests/v2", method="PUT").respond_with_data(
        errors("MANIFEST_UNKNOWN"), status=400
    )
    client = client_for(server)
    with pytest.raises(
        RegistryError, match=r"403 forbidden for manifest push of app:v1; .*needs write:packages"
    ):
        client.put_manifest("app", "v1", b"{}", OCI_MANIFEST)
    with pytest.raises(
        RegistryError, match=r"manifest push of app:v2: tag or digest not found \(manifest unknown"
    ):
        client.put_manifest("app", "v2", b"{}", OCI_MANIFEST)


def test_a_401_with_credentials_names_the_user_but_never_the_password(server):
    server.expect_request("/v2/app/manifests/v1").respond_with_data(errors("UNAUTHORIZED"), status=401)
    with pytest.raises(RegistryError) as caught:
        client_for(server, creds=True).manifest("app", "v1")
    assert f"(user {USER!r} tried)" in caught.value.message
    assert PASSWORD not in caught.value.message


# -- tags and catalog ---------------------------------------------------------------------------


def test_tags_follow_link_pagination_to_the_last_page(server):
    reg = FakeRegistry(server)
    for tag in ("a", "b", "c", "d", "e"):
        reg.add_image("team/app", tag)
    assert client_for(reg).tags("team/app", page_size=2) == ["a", "b", "c", "d", "e"]
    assert reg.requests() == [
        ("GET", "/v2/team/app/tags/list?n=2"),
        ("GET", "/v2/team/app/tags/list?n=2&last=b"),
        ("GET", "/v2/team/app/tags/list?n=2&last=d"),
    ]


def test_tags_of_an_unknown_repository_name_it(server):
    reg = FakeRegistry(server)
    with pytest.raises(
        RegistryError, match=rf"^{reg.host}: repository team/nope not found \(name unknown\); check"
    ):
        client_for(reg).tags("team/nope")


def test_tags_follow_an_absolute_next_link_and_accept_a_null_tag_list(server):
    base = f"http://127.0.0.1:{server.port}"
    server.expect_request("/v2/app/tags/list", query_string="").respond_with_json(
        {"name": "app", "tags": ["v1"]}, headers={"Link": f'<{base}/v2/app/tags/list?last=v1>; rel="next"'}
    )
    server.expect_request("/v2/app/tags/list", query_string="last=v1").respond_with_json(
        {"name": "app", "tags": None}
    )
    assert client_for(server).tags("app") == ["v1"]
    assert len(server.log) == 2


def test_catalog_follows_pagination_and_raises_on_errors(server):
    reg = FakeRegistry(server)
    for repo in ("a/one", "a/two", "b/three"):
        reg.add_image(repo, "v1")
    client = client_for(reg)
    assert client.catalog(page_size=2) == ["a/one", "a/two", "b/three"]
    assert client.catalog() == ["a/one", "a/two", "b/three"]
    assert reg.requests() == [
        ("GET", "/v2/_catalog?n=2"),
        ("GET", "/v2/_catalog?n=2&last=a/two"),
        ("GET", "/v2/_catalog"),
    ]
    server.clear()
    server.expect_request("/v2/_catalog").respond_with_data(errors("DENIED"), status=403)
    with pytest.raises(RegistryError, match=r"403 forbidden for the catalog"):
        client.catalog()


# -- blobs: get, exists, mount, copy ------------------------------------------------------------


def test_blob_and_has_blob(server):
    reg = FakeRegistry(server)
    reg.add_image("app", "v1")
    (repo, digest), data = next(iter(reg.blobs.items()))
    client = client_for(reg)
    assert client.blob(repo, digest) == data
    assert client.has_blob(repo, digest)
    assert not client.has_blob("other", digest)
    assert not client.has_blob(repo, "sha256:" + "0" * 64)


def test_mount_blob_mounts_across_repositories_with_201(server):
    reg = FakeRegistry(server)
    reg.add_image("src", "v1")
    (_, digest), data = next(iter(reg.blobs.items()))
    client = client_for(reg)
    client.mount_blob("dst", digest, "src")
    assert reg.blobs[("dst", digest)] == data
    assert reg.requests() == [
        ("HEAD", f"/v2/dst/blobs/{digest}"),
        ("POST", f"/v2/dst/blobs/uploads/?mount={digest}&from=src"),
    ]
    client.mount_blob("dst", digest, "src")  # already there: one HEAD, no second mount
    assert reg.requests()[2:] == [("HEAD", f"/v2/dst/blobs/{digest}")]


def test_mount_blob_copies_the_bytes_when_the_registry_opens_an_upload_instead(server):
    reg = FakeRegistry(server, mount=False)
    reg.add_image("src", "v1")
    (_, digest), data = next(iter(reg.blobs.items()))
    client_for(reg).mount_blob("dst", digest, "src")
    assert reg.blobs[("dst", digest)] == data
    assert reg.requests() == [
        ("HEAD", f"/v2/dst/blobs/{digest}"),
        ("POST", f"/v2/dst/blobs/uploads/?mount={digest}&from=src"),
        ("GET", f"/v2/src/blobs/{digest}"),
        ("PUT", f"/v2/dst/blobs/uploads/upload-1?_state=opaque&digest={digest}"),
    ]
    assert server.log[-1][0].headers["Content-Type"] == "application/octet-stream"


def test_mount_blob_into_an_uncreatable_repository_names_the_code_and_the_fix(server):
    digest = "sha256:" + "d" * 64
    server.expect_request(f"/v2/Bad/blobs/{digest}", method="HEAD").respond_with_data("", status=404)
    server.expect_request("/v2/Bad/blobs/uploads/", method="POST").respond_with_data(
        errors("NAME_INVALID", "invalid repository name"), status=404
    )
    with pytest.raises(
        RegistryError, match=r"cannot create Bad there \(NAME_INVALID\): check the target repo"
    ):
        client_for(server).mount_blob("Bad", digest, "src")


def test_put_tags_puts_every_tag_and_each_serves_the_same_digest(server):
    reg = FakeRegistry(server)
    digest, body = reg.add_image("app", "sha-1234567")
    client = client_for(reg)
    served = client.put_tags("app", ["latest", "main", "v1.2"], reference="sha-1234567")
    assert served == {"latest": digest, "main": digest, "v1.2": digest}
    assert reg.requests() == [
        ("GET", "/v2/app/manifests/sha-1234567"),
        ("PUT", "/v2/app/manifests/latest"),
        ("PUT", "/v2/app/manifests/main"),
        ("PUT", "/v2/app/manifests/v1.2"),
    ]
    assert {tag: client.manifest("app", tag).digest for tag in served} == served
    assert reg.manifests[("app", "main")] == (OCI_MANIFEST, body)


def test_put_tags_with_the_manifest_in_hand_makes_no_get(server):
    reg = FakeRegistry(server)
    digest, body = reg.add_image("app")
    served = client_for(reg).put_tags(
        "app", ["v2"], reference=digest, manifest=Manifest(digest, OCI_MANIFEST, body)
    )
    assert served == {"v2": digest}
    assert reg.requests() == [("PUT", "/v2/app/manifests/v2")]


def test_put_tags_of_a_missing_source_says_there_is_nothing_to_retag(server):
    reg = FakeRegistry(server)
    with pytest.raises(
        RegistryError, match=rf"^{reg.host}: src:v1 not found \(tag unknown\); nothing to retag"
    ):
        client_for(reg).put_tags("dst", ["v1"], reference="v1", source_name="src")


def test_copy_across_repositories_mounts_every_blob_before_the_manifest(server):
    reg = FakeRegistry(server)
    digest, body = reg.add_image("src", "v1")
    assert client_for(reg).copy("src", "v1", "dst", "release") == digest
    doc = json.loads(body)
    wanted = [doc["config"]["digest"], *(layer["digest"] for layer in doc["layers"])]
    assert all(reg.blobs[("dst", d)] == reg.blobs[("src", d)] for d in wanted)
    mounts = [p for m, p in reg.requests() if m == "POST"]
    assert mounts == [f"/v2/dst/blobs/uploads/?mount={d}&from=src" for d in wanted]
    assert reg.requests()[-1] == ("PUT", "/v2/dst/manifests/release")


def test_copy_of_a_manifest_list_copies_each_platform_by_digest_before_the_index(server):
    reg = FakeRegistry(server, mount=False)  # every blob goes through the upload fallback too
    index_digest, index_body = reg.add_index("src", "v1")
    children = [m["digest"] for m in json.loads(index_body)["manifests"]]
    assert client_for(reg).copy("src", "v1", "dst", "v1") == index_digest
    puts = [p for m, p in reg.requests() if m == "PUT" and "/manifests/" in p]
    assert puts == [*(f"/v2/dst/manifests/{c}" for c in children), "/v2/dst/manifests/v1"]
    assert reg.manifests[("dst", "v1")] == (OCI_INDEX, index_body)
    assert {reg.manifests[("dst", c)] for c in children} == {reg.manifests[("src", c)] for c in children}


def test_copy_of_an_index_whose_platform_manifest_is_gone_names_it(server):
    reg = FakeRegistry(server)
    reg.add_index("src", "v1")
    gone = next(ref for (repo, ref), (kind, _) in reg.manifests.items() if kind == OCI_MANIFEST)
    del reg.manifests[("src", gone)]
    with pytest.raises(RegistryError, match=rf"^{reg.host}: src@{gone} is missing"):
        client_for(reg).copy("src", "v1", "dst", "v1")
    assert ("dst", "v1") not in reg.manifests


# -- image config and size ----------------------------------------------------------------------


def test_image_config_of_an_image_an_index_an_empty_index_and_a_missing_tag(server):
    reg = FakeRegistry(server)
    reg.add_image("app", "single", arch="s390x")
    reg.add_index("app", "multi", ("arm64", "amd64"))
    reg._store("app", "empty", OCI_INDEX, json.dumps({"schemaVersion": 2, "manifests": []}).encode())
    client = client_for(reg)
    assert client.image_config("app", "single")["config"]["Labels"] == {"arch": "s390x"}
    assert client.image_config("app", "multi")["architecture"] == "arm64"  # the index's first image
    assert client.image_config("app", "empty") is None
    assert client.image_config("app", "nope") is None


def test_config_of_a_fetched_manifest_needs_no_second_manifest_request(server):
    reg = FakeRegistry(server)
    reg.add_image("app", "v1", arch="riscv64")
    client = client_for(reg)
    found = client.manifest("app", "v1", method="GET")
    assert client.config_of("app", found)["architecture"] == "riscv64"
    assert [m for m, p in reg.requests() if "/manifests/" in p] == ["GET"]


def test_image_size_sums_config_and_layers_and_every_platform_of_an_index(server):
    reg = FakeRegistry(server)
    reg.add_index("app", "multi", ("amd64", "arm64"))
    client = client_for(reg)
    sizes = {}
    for arch in ("amd64", "arm64"):
        digest, body = reg.add_image("app", f"only-{arch}", arch=arch)
        doc = json.loads(body)
        sizes[arch] = doc["config"]["size"] + sum(layer["size"] for layer in doc["layers"])
        assert client.image_size("app", Manifest(digest, OCI_MANIFEST, body)) == sizes[arch]
    index = client.manifest("app", "multi", method="GET")
    assert client.image_size("app", index) == sizes["amd64"] + sizes["arm64"]
    gone = json.loads(index.body)["manifests"][1]["digest"]
    del reg.manifests[("app", gone)]
    assert client.image_size("app", index) is None  # unknown, not a wrong sum


# -- Bearer tokens ------------------------------------------------------------------------------


def test_bearer_challenge_fetches_a_token_for_the_scope_with_basic_credentials(server):
    reg = FakeRegistry(server, auth="bearer")
    digest, _ = reg.add_image("team/app", "v1")
    found = client_for(reg, creds=True).manifest("team/app", "v1")
    assert found.digest == digest
    assert reg.token_requests == [
        {"scope": ["repository:team/app:pull"], "service": "fake-registry", "auth": basic_header()}
    ]
    first, retried = (r for r, _ in server.log if r.path != "/token")
    assert "Authorization" not in first.headers
    assert retried.headers["Authorization"] == "Bearer token-1"


def test_a_token_is_reused_for_the_same_scope_and_fetched_anew_for_another(server):
    reg = FakeRegistry(server, auth="bearer")
    reg.add_image("app", "v1")
    reg.add_image("app", "v2")
    reg.add_image("other", "v1")
    client = client_for(reg, creds=True)
    assert client.manifest("app", "v1") and client.manifest("app", "v2", method="GET")
    assert client.tags("app") == ["v1", "v2"]
    assert [t["scope"] for t in reg.token_requests] == [["repository:app:pull"]]
    assert client.manifest("other", "v1")
    assert [t["scope"] for t in reg.token_requests] == [["repository:app:pull"], ["repository:other:pull"]]


def test_pushing_asks_for_pull_push_and_a_mount_for_both_repositories(server):
    reg = FakeRegistry(server, auth="bearer")
    digest, _ = reg.add_image("src", "v1")
    assert client_for(reg, creds=True).copy("src", "v1", "dst", "v1") == digest
    scopes = [t["scope"] for t in reg.token_requests]
    assert ["repository:src:pull"] in scopes  # the source manifest
    assert ["repository:dst:pull,push", "repository:src:pull"] in scopes  # the mounts
    assert ["repository:dst:pull,push"] in scopes  # the manifest push
    assert reg.manifests[("dst", "v1")] == reg.manifests[("src", "v1")]


def test_ping_and_catalog_take_the_scope_from_the_client_or_the_challenge(server):
    reg = FakeRegistry(server, auth="bearer")
    reg.add_image("app", "v1")
    client = client_for(reg)  # anonymous: the token service lets anyone in
    assert client.ping() == 200
    assert client.catalog() == ["app"]
    assert reg.token_requests == [
        {"scope": [], "service": "fake-registry", "auth": ""},
        {"scope": ["registry:catalog:*"], "service": "fake-registry", "auth": ""},
    ]


@pytest.mark.parametrize("creds, who", [(True, f"user {USER!r}"), (False, "anonymous access")])
def test_a_token_service_refusal_names_who_and_the_scope(server, creds, who):
    reg = FakeRegistry(server, auth="bearer")
    reg.anonymous_tokens = False
    client = client_for(reg, creds=creds)
    if creds:
        client.password = Secret("wrong-" + PASSWORD)
    with pytest.raises(RegistryError) as caught:
        client.manifest("app", "v1")
    assert caught.value.message == (
        f"{reg.host}: token service refused {who} for repository:app:pull; "
        "check GITHUB_TOKEN/REGISTRY_PASSWORD"
    )
    assert PASSWORD not in caught.value.message


def test_a_token_answer_may_use_access_token_and_must_carry_one(server):
    realm = f"http://127.0.0.1:{server.port}/token"
    challenge = {"WWW-Authenticate": f'Bearer realm="{realm}",service="s"'}
    server.expect_request("/v2/", headers={"Authorization": "Bearer oauth-style"}).respond_with_json({})
    server.expect_request("/v2/").respond_with_data("", status=401, headers=challenge)
    server.expect_oneshot_request("/token").respond_with_json({"access_token": "oauth-style"})
    server.expect_oneshot_request("/token").respond_with_json({"expires_in": 60})
    assert client_for(server).ping() == 200
    with pytest.raises(RegistryError, match=r"^127\.0\.0\.1:\d+: token service answered without a token$"):
        client_for(server).ping()


def test_a_challenge_without_realm_is_reported(server):
    server.expect_request("/v2/").respond_with_data(
        "", status=401, headers={"WWW-Authenticate": 'Bearer x="y"'}
    )
    with pytest.raises(RegistryError, match=r'auth challenge without realm: Bearer x="y"'):
        client_for(server).ping()


def test_a_failing_token_service_is_a_registry_error_naming_the_host(server):
    realm = f"http://127.0.0.1:{server.port}/token"
    server.expect_request("/v2/").respond_with_data(
        "", status=401, headers={"WWW-Authenticate": f'Bearer realm="{realm}"'}
    )
    server.expect_request("/token").respond_with_data("upstream down", status=503)
    with pytest.raises(RegistryError, match=rf"^127\.0\.0\.1:{server.port}: "):
        client_for(server).ping()


# -- Basic auth and where credentials may go ----------------------------------------------------


def test_basic_challenge_is_answered_once_then_credentials_go_with_every_request(server):
    reg = FakeRegistry(server, auth="basic")
    digest, _ = reg.add_image("app", "v1")
    client = client_for(reg, creds=True)
    assert client.manifest("app", "v1").digest == digest
    assert client.manifest("app", "v1").digest == digest
    sent = [r.headers.get("Authorization") for r, _ in server.log]
    assert sent == [None, basic_header(), basic_header()]  # the second request needs no challenge


def test_basic_challenge_without_credentials_is_a_401_naming_the_settings(server):
    reg = FakeRegistry(server, auth="basic")
    reg.add_image("app", "v1")
    client = client_for(reg)
    assert client.ping() == 401
    with pytest.raises(RegistryError, match=r"401 unauthorized for manifest app:v1 \(no credentials tried\)"):
        client.manifest("app", "v1")


@pytest.mark.parametrize("auth", ["basic", "bearer"])
def test_a_plain_http_url_on_another_origin_gets_no_credentials_and_no_challenge_answered(server, auth):
    reg = FakeRegistry(server, auth=auth)
    client = RegistryClient(REMOTE, username=USER, password=Secret(PASSWORD), retry=ONCE)
    assert client.request("GET", f"http://{reg.host}/v2/", scope="repository:app:pull").status_code == 401
    assert [r.headers.get("Authorization") for r, _ in server.log] == [None]
    assert reg.token_requests == []


def test_a_host_listed_as_insecure_may_receive_credentials_over_plain_http(server):
    reg = FakeRegistry(server, auth="basic")
    client = RegistryClient(
        REMOTE, username=USER, password=Secret(PASSWORD), insecure_hosts=[REMOTE], retry=ONCE
    )
    assert client.base == f"http://{REMOTE}"
    client.session.proxies = {"http": f"http://{reg.host}"}  # REMOTE's requests reach the stand-in
    assert client.ping() == 200
    assert server.log[-1][0].headers["Authorization"] == basic_header()


def test_a_loopback_registry_cannot_send_credentials_to_a_remote_plain_http_realm(server):
    realm = "http://auth.example.invalid/token"  # .invalid never resolves: nothing leaves the machine
    server.expect_request("/v2/").respond_with_data(
        "", status=401, headers={"WWW-Authenticate": f'Bearer realm="{realm}"'}
    )
    with pytest.raises(RegistryError, match="refusing to send credentials"):
        client_for(server, creds=True).ping()


def test_no_error_message_ever_contains_the_password(server, sleeps):
    """Every failure path that holds credentials: the message names the user, never the secret."""
    reg = FakeRegistry(server, auth="bearer")
    reg.anonymous_tokens = False
    secret = Secret(PASSWORD)
    encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    clients = [
        RegistryClient(reg.host, username=USER, password=Secret("x" + PASSWORD), retry=ONCE),  # refused token
        RegistryClient(reg.host, username=USER, password=secret, retry=ONCE),  # an unknown repository
        RegistryClient(
            f"127.0.0.1:{closed_port()}", username=USER, password=secret, retry=sleeps.policy(retries=1)
        ),
        RegistryClient("nowhere.invalid", username=USER, password=secret, retry=ONCE),
    ]
    calls = [
        lambda: clients[0].manifest("app", "v1"),
        lambda: clients[1].tags("nothing"),
        lambda: clients[2].tags("app"),
        lambda: clients[3].ping(),
    ]
    messages = []
    for call in calls:
        with pytest.raises(RegistryError) as caught:
            call()
        messages.append(caught.value.message)
    assert len(set(messages)) == len(calls)
    for message in messages:
        assert PASSWORD not in message and encoded not in message
    assert PASSWORD not in f"{secret} {secret!r} {clients[1].password}"


# -- retries, unreachable hosts ----------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 502, 503])
def test_transient_answers_are_retried_honouring_retry_after(server, sleeps, status):
    digest = sha(b"payload")
    path = f"/v2/app/blobs/{digest}"
    server.expect_oneshot_request(path).respond_with_data(
        "busy", status=status, headers={"Retry-After": "0.05"}
    )
    server.expect_oneshot_request(path).respond_with_data("busy", status=status)  # no Retry-After: backoff
    server.expect_request(path).respond_with_data(b"payload")
    client = client_for(server, retry=sleeps.policy(retries=3, backoff=0.01, max_wait=5))
    assert client.blob("app", digest) == b"payload"
    assert sleeps == [0.05, 0.02]  # Retry-After, then the second step of the exponential backoff
    assert len(server.log) == 3


def test_giving_up_after_the_bounded_retries_names_the_host_and_the_status(server, sleeps):
    server.expect_request("/v2/app/manifests/v1").respond_with_data("unavailable", status=503)
    client = client_for(server, retry=sleeps.policy(retries=2, backoff=0.01, max_wait=5))
    with pytest.raises(
        RegistryError, match=rf"^127\.0\.0\.1:{server.port}: manifest app:v1 answered HTTP 503: "
    ):
        client.manifest("app", "v1")
    assert len(server.log) == 3  # the first attempt and two retries
    assert sleeps == [0.01, 0.02]


def test_a_retry_after_beyond_max_wait_is_not_waited_for(server, sleeps):
    server.expect_request("/v2/").respond_with_data("slow down", status=429, headers={"Retry-After": "3600"})
    assert client_for(server, retry=sleeps.policy(retries=5, max_wait=2)).ping() == 429
    assert sleeps == [] and len(server.log) == 1


def test_client_errors_are_not_retried(server, sleeps):
    server.expect_request("/v2/").respond_with_data("nope", status=400)
    assert client_for(server, retry=sleeps.policy(retries=5)).ping() == 400
    assert sleeps == [] and len(server.log) == 1


def test_a_closed_port_is_retried_then_reported_unreachable(sleeps):
    host = f"127.0.0.1:{closed_port()}"
    client = RegistryClient(host, insecure_hosts=[host], retry=sleeps.policy(retries=2, max_wait=5))
    with pytest.raises(
        RegistryError, match=rf"^{host}: unreachable after 3 attempts \(.*(refused|Max retries)"
    ):
        client.ping()
    assert sleeps == [0.01, 0.02]


def test_a_name_that_does_not_resolve_is_reported_at_once(sleeps):
    client = RegistryClient("no-such-registry.invalid:5000", retry=sleeps.policy(retries=3))
    with pytest.raises(RegistryError) as caught:
        client.ping()
    assert caught.value.message == (
        "no-such-registry.invalid:5000: the name does not resolve (DNS); check the host in "
        "MOLTBUILD_REGISTRY or the network's DNS"
    )
    assert sleeps == []  # no retry can make a name resolve


def test_a_tag_is_resolved_once_per_client_and_an_index_names_its_platforms(server):
    reg = FakeRegistry(server)
    index, body = reg.add_index("base", "1")
    client = client_for(reg)
    first = client.resolved("base", "1")
    asked = len(server.log)
    assert client.resolved("base", "1") is first and len(server.log) == asked  # once per run
    children = {c["digest"] for c in json.loads(body)["manifests"]}
    assert first.digests() == {index, *children} and len(children) == 2
    image, _ = reg.add_image("other", "1")
    assert client.resolved("other", "1").digests() == {image}
    assert client.resolved("other", "nope") is None
