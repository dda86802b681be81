"""The registry's HTTP side on one requests.Session: the 401 challenge (bearer tokens per scope,
basic auth), credentials kept to the registry's own origin (never sent along a `Link` or
`Location` to another host, never over plain HTTP to an untrusted one), redirects followed here,
JSON answers checked, the HTTPS-then-HTTP fallback of a loopback registry, one deadline per
operation, and retries through the one policy (system/retry.py).
The OCI operations on top of it are in registry/client.py."""

from __future__ import annotations

import contextlib
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
from moltbuild.system.retry import TRANSIENT_ERRORS, RetryPolicy, Tries, retry_after, transient_status

OPERATION_FACTOR = 3  # an operation (its requests and their retries) gets this many idle timeouts
# 1 + 4 retries, 0.5 1 2 4 s apart; a Retry-After is honoured up to a minute in all.
RETRY = RetryPolicy(attempts=5, base=0.5, cap=30.0, max_wait=60.0)
_CHALLENGE_RE = re.compile(r'(\w+)="([^"]*)"')
MAX_REDIRECTS = 10
_REDIRECTS = (301, 302, 303, 307, 308)


@dataclass(frozen=True)
class Deadline:
    """The bound one operation's requests share: `what` names it in the error."""

    what: str
    end: float
    seconds: float  # the whole bound, for the message

    def left(self) -> float:
        return self.end - time.monotonic()


class UnresolvedHost(RegistryError):
    """The registry's host name does not resolve; `host` is that name (callers that know where the
    name came from say so)."""

    def __init__(self, host: str):
        super().__init__(
            f"{host}: the name does not resolve (DNS); check the host in MOLTBUILD_REGISTRY or the "
            "network's DNS"
        )
        self.host = host


class _Stalled(Exception):
    """A request that did not finish within what its operation had left."""


class RegistrySession:
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
        retry: RetryPolicy = RETRY,
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
        self.retry = retry
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
        """A token for the challenge's realm and `scope`, cached until shortly before it expires."""
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
        token, ttl = self._fetch_token(realm, params)
        self._tokens[key] = (token, time.monotonic() + max(ttl - 10, 5))
        return token

    def _fetch_token(self, realm: str, params: dict[str, str | list[str]]) -> tuple[str, float]:
        """Ask the token service (with the credentials, when they may go there): token and lifetime."""
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
        data = self.json_object(resp, "token service")
        token = data.get("token") or data.get("access_token")
        if not token:
            raise RegistryError(f"{self.host}: token service answered without a token")
        return token, float(data.get("expires_in") or 60)

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
        """One request with the policy's retries on dropped connections and transient statuses,
        all within the current operation's deadline (a request of its own when none is open)."""
        with self.operation(f"{method} {urlsplit(url).path}") as deadline:
            return self._follow(deadline, method, url, kwargs)

    def _follow(self, deadline: Deadline, method: str, url: str, kwargs: dict) -> requests.Response:
        """Redirects followed here, not by requests, so every hop passes the credential rules: the
        credentials stay with the origin they were sent to and are dropped for good at the first
        hop elsewhere (blob storage, a stranger); more than MAX_REDIRECTS hops is a loop."""
        first = url
        for _ in range(MAX_REDIRECTS + 1):
            resp = self._send_within(deadline, method, url, allow_redirects=False, **kwargs)
            target = resp.headers.get("Location") if resp.status_code in _REDIRECTS else None
            if not target:
                return resp
            url = urljoin(resp.url, target)
            if _origin(url) != _origin(resp.url) or not self._can_send_credentials(url):
                kwargs = _without_credentials(kwargs)
            if _becomes_get(resp.status_code, method):
                method, kwargs = "GET", {k: v for k, v in kwargs.items() if k not in ("data", "json")}
        raise RegistryError(
            f"{self.host}: {first} redirects more than {MAX_REDIRECTS} times (a redirect loop); "
            "the registry or a proxy in front of it is misconfigured"
        )

    def _send_within(self, deadline: Deadline, method: str, url: str, **kwargs) -> requests.Response:
        tries = self.retry.start()
        while True:
            try:
                resp = self._exchange(deadline, method, url, **kwargs)
            except requests.exceptions.SSLError as exc:
                url = self._plain_url(url, exc)  # not a failed try: the same try over plain HTTP
                continue
            except (*TRANSIENT_ERRORS, _Stalled) as exc:
                self._wait_after_error(tries, deadline, exc)
                continue
            if not self._wait_after_status(tries, deadline, resp):
                return resp

    def _wait_after_error(self, tries: Tries, deadline: Deadline, exc: Exception) -> None:
        """Wait before trying again after no answer; or the RegistryError that ends the tries."""
        if _dns_failure(exc):  # a name that does not resolve will not resolve in 9 s either
            raise UnresolvedHost(self.host) from None
        if deadline.left() <= 0 or isinstance(exc, _Stalled):
            raise self._too_slow(deadline) from None
        wait = tries.after_failure()
        if wait is None:
            raise RegistryError(
                f"{self.host}: unreachable after {tries.failures} attempts ({_short(exc)})"
            ) from None
        tries.pause(min(wait, max(deadline.left(), 0)))  # past the deadline the next try says so

    def _wait_after_status(self, tries: Tries, deadline: Deadline, resp: requests.Response) -> bool:
        """After a transient answer, wait (as Retry-After asks, else the backoff) and say True; False
        when the answer stands (not transient, the tries used up, or no time left to wait)."""
        if not transient_status(resp.status_code):
            return False
        wait = tries.after_failure(retry_after(resp.headers, self.retry.clock.now()))
        if wait is None or wait > deadline.left():
            return False
        tries.pause(wait)
        return True

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
        """`path` on this registry (or a whole URL), answering a 401 challenge once: a bearer token
        for `scope`, or basic auth where the credentials may go. A URL on another origin (a `Link`
        or `Location` naming another host or port) gets no credentials and no challenge answered."""
        url = path if path.startswith(("http://", "https://")) else urljoin(self.base + "/", path.lstrip("/"))
        own = _origin(url) == _origin(self.base)
        headers = dict(kwargs.pop("headers", {}) or {})
        if own and self._basic_known and self._basic_allowed(url, kwargs):
            kwargs["auth"] = self._basic()
        resp = self._send(method, url, headers=headers, **kwargs)
        if resp.status_code != 401 or not own:
            return resp
        return self._answer_challenge(resp, method, url, scope, headers, kwargs)

    def _answer_challenge(
        self, resp: requests.Response, method: str, url: str, scope: str | list[str] | None, headers, kwargs
    ) -> requests.Response:
        """The request again with a bearer token or basic auth, as the 401 asks; else the 401."""
        challenge = resp.headers.get("WWW-Authenticate", "")
        if challenge.lower().startswith("bearer"):
            headers["Authorization"] = f"Bearer {self._bearer(challenge, scope)}"
            return self._send(method, url, headers=headers, **kwargs)
        if challenge.lower().startswith("basic") and self._basic_allowed(url, kwargs):
            self._basic_known = True
            return self._send(method, url, headers=headers, auth=self._basic(), **kwargs)
        return resp

    def _basic_allowed(self, url: str, kwargs: dict) -> bool:
        """Answer a basic challenge? With credentials not sent yet, and never over plain HTTP to an
        untrusted host (a RegistryError saying so)."""
        if not self.has_credentials or "auth" in kwargs:
            return False
        if not self._can_send_credentials(url):
            raise RegistryError(
                f"{self.host}: refusing to send credentials over plain HTTP; use HTTPS or add "
                f"{self.host} to MOLTBUILD_INSECURE_REGISTRIES"
            )
        return True

    def ping(self) -> int:
        """Status of GET /v2/ after auth: 200 reachable and authorised, 401 needs credentials."""
        return self.request("GET", "/v2/").status_code

    def answering(self, what: str) -> None:
        """Any HTTP answer to GET /v2/ within one idle timeout, else a RegistryError naming the host
        and `what`: is a registry that let a push stall still there?"""
        with self.operation(what, fresh=True, seconds=self.timeout):
            self.request("GET", "/v2/")

    def json_object(self, resp: requests.Response, what: str) -> dict:
        """The answer's JSON object, or a RegistryError naming the URL and what came instead (a
        login page, a proxy's error page)."""
        try:
            data = resp.json()
        except ValueError:
            data = None
        if isinstance(data, dict):
            return data
        got = resp.headers.get("Content-Type", "").split(";")[0] or "no content type"
        raise RegistryError(
            f"{self.host}: {what}: {resp.url} answered HTTP {resp.status_code} with {got}, not JSON; "
            "a login page or proxy in front of the registry? check MOLTBUILD_REGISTRY"
        )


def _origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port: what credentials are scoped to (as browsers scope them)."""
    parts = urlsplit(url)
    return (
        parts.scheme,
        (parts.hostname or "").lower(),
        parts.port or {"http": 80, "https": 443}.get(parts.scheme),
    )


def _becomes_get(status: int, method: str) -> bool:
    """A redirect that turns the request into a GET (as browsers and requests do)."""
    return (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST")


def _without_credentials(kwargs: dict) -> dict:
    headers = {k: v for k, v in (kwargs.get("headers") or {}).items() if k.lower() != "authorization"}
    return {**{k: v for k, v in kwargs.items() if k != "auth"}, "headers": headers}


def _dns_failure(exc: Exception) -> bool:
    text = repr(exc)
    return any(
        m in text for m in ("NameResolutionError", "Name or service not known", "No address associated")
    )


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:160]
