"""OCI distribution client on one requests.Session: auth challenges, Accept headers, retries."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests

from moltbuild.errors import RegistryError
from moltbuild.refs import is_loopback
from moltbuild.settings import Secret

MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
ACCEPT = ", ".join(MANIFEST_TYPES)
TRANSIENT = {429, 500, 502, 503, 504}
OPERATION_FACTOR = 3  # an operation (its requests and their retries) gets this many idle timeouts
_CHALLENGE_RE = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Deadline:
    """The bound one operation's requests share: `what` names it in the error."""

    what: str
    end: float
    seconds: float  # the whole bound, for the message

    def left(self) -> float:
        return self.end - time.monotonic()


class _Stalled(Exception):
    """A request that did not finish within what its operation had left."""


@dataclass
class Manifest:
    digest: str
    media_type: str
    body: bytes = b""


class RegistryClient:
    def __init__(
        self,
        host: str,
        *,
        username: str | None = None,
        password: Secret | None = None,
        insecure_hosts: list[str] | tuple[str, ...] = (),
        ca_bundle: str | None = None,
        timeout: float = 30,
        operation_factor: float = OPERATION_FACTOR,
        retries: int = 4,
        backoff: float = 0.5,
        max_wait: float = 60,
    ):
        self.host = host
        # Listed hosts speak plain HTTP; a loopback host may (as Docker treats it): HTTPS first,
        # plain HTTP when the answer is not TLS.
        self.plain_http = host in insecure_hosts
        self.insecure_hosts = tuple(insecure_hosts)
        self.base = f"{'http' if self.plain_http else 'https'}://{host}"
        self.username = username
        self.password = password
        self.timeout = timeout  # no response start within it: a transient failure (MOLTBUILD_IDLE_TIMEOUT)
        self.operation_timeout = timeout * operation_factor
        self._ops = threading.local()  # the current operation's Deadline, per thread
        self.retries = retries
        self.backoff = backoff
        self.max_wait = max_wait
        self.session = requests.Session()
        # Passed per request: a session-level verify loses to REQUESTS_CA_BUNDLE in the environment.
        self.verify: str | bool = ca_bundle or True
        self._tokens: dict[str, tuple[str, float]] = {}
        self._basic_known = False

    # -- auth ---------------------------------------------------------------------------------

    @property
    def has_credentials(self) -> bool:
        return bool(self.username and self.password)

    def _basic(self) -> tuple[str, str] | None:
        if not self.has_credentials:
            return None
        return (self.username or "", self.password.reveal() if self.password else "")

    def _can_send_credentials(self, url: str) -> bool:
        """Over HTTPS; over plain HTTP only when both this registry and the URL's host are trusted
        with it (listed in MOLTBUILD_INSECURE_REGISTRIES, or on loopback): a loopback registry may
        name a token service on another machine."""
        parts = urlsplit(url)
        if parts.scheme == "https":
            return True
        host = parts.netloc.rpartition("@")[2]
        return all(h in self.insecure_hosts or is_loopback(h) for h in (self.host, host))

    def _bearer(self, challenge: str, scope: str | list[str] | None) -> str:
        params: dict[str, str | list[str]] = dict(_CHALLENGE_RE.findall(challenge))
        realm = str(params.pop("realm", ""))
        if not realm:
            raise RegistryError(f"{self.host}: auth challenge without realm: {challenge[:100]}")
        if scope:
            params["scope"] = scope
        key = f"{realm}|{params.get('scope', '')}"
        cached = self._tokens.get(key)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        if self.has_credentials and not self._can_send_credentials(realm):
            raise RegistryError(
                f"{self.host}: refusing to send credentials to token service {realm} over plain HTTP; "
                f"add {self.host} to MOLTBUILD_INSECURE_REGISTRIES only if you trust that network"
            )
        auth = self._basic()
        resp = self._send("GET", realm, params=params, auth=auth)
        if resp.status_code in (401, 403):
            who = f"user {self.username!r}" if auth else "anonymous access"
            raise RegistryError(
                f"{self.host}: token service refused {who} for {params.get('scope', 'access')}; "
                "check GITHUB_TOKEN/REGISTRY_PASSWORD"
            )
        if not resp.ok:
            raise RegistryError(
                f"{self.host}: token service {realm} answered HTTP {resp.status_code}; try again later"
            )
        try:
            data = resp.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise RegistryError(f"{self.host}: token service {realm} answered something that is not JSON")
        token = data.get("token") or data.get("access_token")
        if not token:
            raise RegistryError(f"{self.host}: token service answered without a token")
        ttl = float(data.get("expires_in") or 60)
        self._tokens[key] = (token, time.monotonic() + max(ttl - 10, 5))
        return token

    # -- transport ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def operation(
        self, what: str, *, fresh: bool = False, seconds: float | None = None
    ) -> Iterator[Deadline]:
        """Every request inside shares one deadline (`seconds`, default `operation_timeout`); past
        it, a RegistryError naming the host and `what`. Nested operations keep the outer deadline
        unless `fresh`."""
        outer: Deadline | None = getattr(self._ops, "current", None)
        if outer is not None and not fresh:
            yield outer
            return
        bound = seconds or self.operation_timeout
        self._ops.current = Deadline(what, time.monotonic() + bound, bound)
        try:
            yield self._ops.current
        finally:
            self._ops.current = outer

    def _too_slow(self, deadline: Deadline) -> RegistryError:
        return RegistryError(
            f"{self.host} did not answer within {deadline.seconds:g}s "
            f"(MOLTBUILD_IDLE_TIMEOUT={self.timeout:g}): {deadline.what}"
        )

    def _send(self, method: str, url: str, **kwargs) -> requests.Response:
        """One request with bounded retries on connection errors, 429 and 5xx only, all within the
        current operation's deadline (a request of its own when none is open)."""
        with self.operation(f"{method} {urlsplit(url).path}") as deadline:
            return self._send_within(deadline, method, url, **kwargs)

    def _send_within(self, deadline: Deadline, method: str, url: str, **kwargs) -> requests.Response:
        retry_until = time.monotonic() + self.max_wait
        attempt = 0
        while True:
            attempt += 1
            try:
                resp = self._exchange(deadline, method, url, **kwargs)
            except requests.exceptions.SSLError as exc:
                url = self._plain_url(url, exc)
                attempt -= 1
                continue
            except (requests.ConnectionError, requests.Timeout, _Stalled) as exc:
                if _dns_failure(exc):  # a name that does not resolve will not resolve in 9 s either
                    raise RegistryError(
                        f"{self.host}: the name does not resolve (DNS); check the host in "
                        "MOLTBUILD_REGISTRY or the network's DNS"
                    ) from None
                if deadline.left() <= 0 or isinstance(exc, _Stalled):
                    raise self._too_slow(deadline) from None
                if attempt > self.retries or time.monotonic() >= retry_until:
                    raise RegistryError(
                        f"{self.host}: unreachable after {attempt} attempts ({_short(exc)})"
                    ) from None
                time.sleep(min(self.backoff * 2 ** (attempt - 1), max(deadline.left(), 0)))
                continue
            if resp.status_code not in TRANSIENT or attempt > self.retries:
                return resp
            wait = _retry_after(resp) or self.backoff * 2 ** (attempt - 1)
            if time.monotonic() + wait > min(retry_until, deadline.end):
                return resp
            time.sleep(wait)

    def _exchange(self, deadline: Deadline, method: str, url: str, **kwargs) -> requests.Response:
        """One request, body included, under a hard bound: the socket timeouts bound each read, not
        a server that trickles its answer; past the deadline the request is abandoned (_Stalled)."""
        left = deadline.left()
        if left <= 0:
            raise _Stalled()
        box: dict[str, object] = {}
        done = threading.Event()
        wait = (min(self.timeout, left), min(self.timeout, left))

        def run() -> None:
            try:
                resp = self.session.request(method, url, timeout=wait, verify=self.verify, **kwargs)
                _ = resp.content  # the body inside the bound too
                box["resp"] = resp
            except BaseException as exc:  # handed to the caller's thread
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=run, name=f"registry {self.host}", daemon=True).start()
        if not done.wait(left):
            raise _Stalled()
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        return box["resp"]  # type: ignore[return-value]

    def _plain_url(self, url: str, exc: requests.exceptions.SSLError) -> str:
        """The plain-HTTP URL for a loopback registry that answered HTTPS with plain HTTP; else the
        TLS failure as a RegistryError."""
        plain, tls_url = f"http://{self.host}", f"https://{self.host}"
        if "WRONG_VERSION_NUMBER" in str(exc) and is_loopback(self.host) and url.startswith(tls_url):
            # Every thread that tried HTTPS switches; the first one also switches the client.
            self.plain_http, self.base = True, plain
            return plain + url[len(tls_url) :]
        if "WRONG_VERSION_NUMBER" in str(exc):
            raise RegistryError(
                f"{self.host} speaks plain HTTP; add it to MOLTBUILD_INSECURE_REGISTRIES if that is intended"
            ) from None
        raise RegistryError(
            f"{self.host}: TLS verification failed ({_short(exc)}); set MOLTBUILD_REGISTRY_CA "
            "to the registry's CA bundle"
        ) from None

    def request(
        self, method: str, path: str, *, scope: str | list[str] | None = None, **kwargs
    ) -> requests.Response:
        url = path if path.startswith(("http://", "https://")) else urljoin(self.base + "/", path.lstrip("/"))
        headers = dict(kwargs.pop("headers", {}) or {})
        if self._basic_known and self.has_credentials:
            kwargs["auth"] = self._basic()
        resp = self._send(method, url, headers=headers, **kwargs)
        if resp.status_code != 401:
            return resp
        challenge = resp.headers.get("WWW-Authenticate", "")
        if challenge.lower().startswith("bearer"):
            headers["Authorization"] = f"Bearer {self._bearer(challenge, scope)}"
            return self._send(method, url, headers=headers, **kwargs)
        if challenge.lower().startswith("basic") and self.has_credentials and "auth" not in kwargs:
            if not self._can_send_credentials(url):
                raise RegistryError(
                    f"{self.host}: refusing to send credentials over plain HTTP; use HTTPS or add "
                    f"{self.host} to MOLTBUILD_INSECURE_REGISTRIES"
                )
            self._basic_known = True
            return self._send(method, url, headers=headers, auth=self._basic(), **kwargs)
        return resp

    # -- API ----------------------------------------------------------------------------------

    def ping(self) -> int:
        """Status of GET /v2/ after auth: 200 reachable and authorised, 401 needs credentials."""
        return self.request("GET", "/v2/").status_code

    def answering(self, what: str) -> None:
        """Any HTTP answer to GET /v2/ within one idle timeout, else a RegistryError naming the host
        and `what`: is a registry that let a push stall still there?"""
        with self.operation(what, fresh=True, seconds=self.timeout):
            self.request("GET", "/v2/")

    def manifest(self, name: str, reference: str, *, method: str = "HEAD") -> Manifest | None:
        """A manifest by tag or digest (None when the registry has no such tag/digest)."""
        with self.operation(f"read manifest {name}:{reference}"):
            resp = self.request(
                method,
                f"/v2/{name}/manifests/{reference}",
                scope=f"repository:{name}:pull",
                headers={"Accept": ACCEPT},
            )
        if resp.status_code == 404:
            return None
        self._raise_for(resp, f"manifest {name}:{reference}")
        digest = resp.headers.get("Docker-Content-Digest", "")
        if method == "GET":  # the bytes decide, not the headers
            digest = self._checked_digest(name, reference, resp.content, digest)
        return Manifest(
            digest,
            resp.headers.get("Content-Type", "").split(";")[0],
            resp.content if method == "GET" else b"",
        )

    def _checked_digest(self, name: str, reference: str, body: bytes, claimed: str) -> str:
        """The sha256 of what was served; a header or a by-digest reference that disagrees with the
        bytes is a registry (or proxy) that altered them."""
        actual = "sha256:" + hashlib.sha256(body).hexdigest()
        expected = [d for d in (claimed, reference) if d.startswith("sha256:")]
        wrong = next((d for d in expected if d != actual), None)
        if wrong:
            raise RegistryError(
                f"{self.host}: {name}:{reference} served a manifest whose sha256 is {actual}, not "
                f"{wrong}: the registry or something between altered it; do not trust this registry"
            )
        return actual

    def put_manifest(self, name: str, reference: str, body: bytes, media_type: str) -> str:
        resp = self.request(
            "PUT",
            f"/v2/{name}/manifests/{reference}",
            scope=f"repository:{name}:pull,push",
            data=body,
            headers={"Content-Type": media_type},
        )
        self._raise_for(resp, f"manifest push of {name}:{reference}", pushing=True)
        return resp.headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(body).hexdigest()

    def tags(self, name: str, *, page_size: int | None = None) -> list[str]:
        """Every tag, following `Link: <...>; rel="next"` pagination."""
        out: list[str] = []
        path: str | None = f"/v2/{name}/tags/list" + (f"?n={page_size}" if page_size else "")
        while path:
            resp = self.request("GET", path, scope=f"repository:{name}:pull")
            if resp.status_code == 404:
                raise RegistryError(
                    f"{self.host}: repository {name} not found (name unknown); check the "
                    "image name and MOLTBUILD_REGISTRY"
                )
            self._raise_for(resp, f"tags of {name}")
            out += resp.json().get("tags") or []
            path = resp.links.get("next", {}).get("url")
        return out

    def catalog(self, *, page_size: int | None = None) -> list[str]:
        """Every repository name the registry lists, following pagination."""
        out: list[str] = []
        path: str | None = "/v2/_catalog" + (f"?n={page_size}" if page_size else "")
        while path:
            resp = self.request("GET", path, scope="registry:catalog:*")
            self._raise_for(resp, "the catalog")
            out += resp.json().get("repositories") or []
            path = resp.links.get("next", {}).get("url")
        return out

    def blob(self, name: str, digest: str) -> bytes:
        resp = self.request("GET", f"/v2/{name}/blobs/{digest}", scope=f"repository:{name}:pull")
        self._raise_for(resp, f"blob {digest[:19]} of {name}")
        return resp.content

    def has_blob(self, name: str, digest: str) -> bool:
        resp = self.request("HEAD", f"/v2/{name}/blobs/{digest}", scope=f"repository:{name}:pull")
        return resp.status_code == 200

    def push_blob(self, name: str, data: bytes) -> str:
        """Upload `data` as a blob of `name` (monolithic: POST, then PUT with the digest); its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if self.has_blob(name, digest):
            return digest
        scope = f"repository:{name}:pull,push"
        resp = self.request("POST", f"/v2/{name}/blobs/uploads/", scope=scope)
        self._raise_for(resp, f"blob upload into {name}", pushing=True)
        self._finish_upload(name, resp.headers["Location"], digest, data, scope)
        return digest

    def _finish_upload(
        self, name: str, location: str, digest: str, data: bytes, scope: str | list[str]
    ) -> None:
        """The monolithic upload's PUT to the Location the registry opened."""
        sep = "&" if "?" in location else "?"
        put = self.request(
            "PUT",
            f"{urljoin(self.base + '/', location)}{sep}digest={digest}",
            scope=scope,
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        self._raise_for(put, f"blob upload into {name}", pushing=True)

    def mount_blob(self, name: str, digest: str, source: str) -> None:
        """Make `digest` of `source` available in `name`: a cross-repository mount, else a copy."""
        if self.has_blob(name, digest):
            return
        scopes = [f"repository:{name}:pull,push", f"repository:{source}:pull"]
        resp = self.request("POST", f"/v2/{name}/blobs/uploads/?mount={digest}&from={source}", scope=scopes)
        if resp.status_code == 201:
            return
        if resp.status_code == 404:  # distribution answers 404 NAME_INVALID/UNKNOWN for a bad target
            raise RegistryError(
                f"{self.host}: cannot create {name} there ({_error_code(resp) or 'HTTP 404'}): check the "
                "target repository name and that the credentials may push to it"
            )
        self._raise_for(resp, f"blob mount into {name}", pushing=True)
        # 202: the registry opened an upload instead of mounting; upload the bytes ourselves.
        with self.operation(f"copy blob {digest[:19]} from {source} into {name}", fresh=True):
            data = self.blob(source, digest)  # moving bytes: a bound of its own
            self._finish_upload(name, resp.headers["Location"], digest, data, scopes)

    def image_config(self, name: str, reference: str) -> dict | None:
        """The image config (labels live in ["config"]["Labels"]); for an index, its first image's."""
        found = self.manifest(name, reference, method="GET")
        return None if found is None else self.config_of(name, found)

    def image_size(self, name: str, found: Manifest) -> int | None:
        """Bytes a pull moves: config + layers, for an index every platform's (compressed)."""
        doc = json.loads(found.body)
        if "manifests" in doc:
            total = 0
            for child in doc["manifests"]:
                sub = self.manifest(name, child["digest"], method="GET")
                size = self.image_size(name, sub) if sub else None
                if size is None:
                    return None
                total += size
            return total
        parts = [doc.get("config") or {}, *(doc.get("layers") or [])]
        return sum(int(p.get("size") or 0) for p in parts)

    def config_of(self, name: str, found: Manifest) -> dict | None:
        """The config of a manifest already fetched (GET): no second manifest request."""
        doc = json.loads(found.body)
        if "manifests" in doc:
            if not doc["manifests"]:
                return None
            return self.image_config(name, doc["manifests"][0]["digest"])
        return json.loads(self.blob(name, doc["config"]["digest"]))

    def copy(self, source_name: str, reference: str, name: str, tag: str) -> str:
        """Tag `source_name:reference` as `name:tag` by copying the manifest; no pull, no daemon."""
        return self.put_tags(name, [tag], source_name=source_name, reference=reference)[tag]

    def put_tags(
        self,
        name: str,
        tags: list[str],
        *,
        reference: str,
        source_name: str | None = None,
        manifest: Manifest | None = None,
    ) -> dict[str, str]:
        """Point each of `tags` in `name` at the manifest `source_name:reference` (one GET unless
        `manifest` is that manifest already, a PUT per tag; blobs are mounted first across
        repositories). Returns tag -> digest served."""
        source_name = source_name or name
        found = manifest or self.manifest(source_name, reference, method="GET")
        if found is None:
            raise RegistryError(
                f"{self.host}: {source_name}:{reference} not found (tag unknown); nothing to retag"
            )
        if name != source_name:
            self._copy_children(source_name, name, json.loads(found.body))
        return {tag: self.put_manifest(name, tag, found.body, found.media_type) for tag in tags}

    def _copy_children(self, source_name: str, name: str, doc: dict) -> None:
        if "manifests" in doc:  # an index: copy each platform's manifest by digest first
            for child in doc["manifests"]:
                sub = self.manifest(source_name, child["digest"], method="GET")
                if sub is None:
                    raise RegistryError(f"{self.host}: {source_name}@{child['digest']} is missing")
                self._copy_children(source_name, name, json.loads(sub.body))
                self.put_manifest(name, child["digest"], sub.body, sub.media_type)
            return
        for desc in [doc["config"], *doc.get("layers", [])]:
            self.mount_blob(name, desc["digest"], source_name)

    def _raise_for(self, resp: requests.Response, what: str, *, pushing: bool = False) -> None:
        if resp.ok:
            return
        if resp.status_code == 401:
            who = f"user {self.username!r}" if self.has_credentials else "no credentials"
            raise RegistryError(
                f"{self.host}: 401 unauthorized for {what} ({who} tried); "
                "set REGISTRY_USERNAME/REGISTRY_PASSWORD or GITHUB_USERNAME/GITHUB_TOKEN"
            )
        if resp.status_code == 403:
            need = "write:packages" if pushing else "read:packages"
            raise RegistryError(
                f"{self.host}: 403 forbidden for {what}; the credentials lack permission "
                f"(a GitHub token needs {need})"
            )
        code = _error_code(resp)
        if code == "NAME_UNKNOWN":
            raise RegistryError(f"{self.host}: {what}: repository not found (name unknown)")
        if code == "MANIFEST_UNKNOWN":
            raise RegistryError(f"{self.host}: {what}: tag or digest not found (manifest unknown)")
        raise RegistryError(f"{self.host}: {what} answered HTTP {resp.status_code}: {resp.text[:200]}")


def _dns_failure(exc: Exception) -> bool:
    text = repr(exc)
    return any(
        m in text for m in ("NameResolutionError", "Name or service not known", "No address associated")
    )


def _error_code(resp: requests.Response) -> str:
    try:
        errors = resp.json().get("errors") or []
        return errors[0].get("code", "") if errors else ""
    except (ValueError, AttributeError):
        return ""


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After", "")
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:160]
