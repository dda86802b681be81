"""Which credentials go to which registry, and the checks done before any build starts."""

from __future__ import annotations

import base64
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from moltbuild.errors import ConfigError, RegistryError
from moltbuild.refs import registry_prefix
from moltbuild.registry.client import RegistryClient
from moltbuild.settings import Secret, Settings
from moltbuild.system.retry import transient_status

GHCR = "ghcr.io"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: Secret
    keys: str  # the setting names they came from, for messages

    def __repr__(self) -> str:
        return f"Credentials({self.username!r}, ****, from {self.keys})"


def credentials_for(host: str, settings: Settings) -> Credentials | None:
    if host == GHCR and settings.get("GITHUB_TOKEN"):
        # ghcr.io checks the token, not the name: GITHUB_TOKEN alone is enough.
        for key in ("GITHUB_USERNAME", "GITHUB_ACTOR"):
            if settings.get(key):
                return Credentials(settings[key], settings["GITHUB_TOKEN"], f"{key}/GITHUB_TOKEN")
        return Credentials("moltbuild", settings["GITHUB_TOKEN"], "GITHUB_TOKEN")
    user, secret = settings.get("REGISTRY_USERNAME"), settings.get("REGISTRY_PASSWORD")
    if user and secret and host in _credential_hosts(settings):
        # Only to the registry images go to: never to another host a file (a kustomization,
        # a --source reference) happens to name.
        return Credentials(user, secret, "REGISTRY_USERNAME/REGISTRY_PASSWORD")
    return None


def _credential_hosts(settings: Settings) -> set[str]:
    """The registry images go to, and the hosts the user listed in MOLTBUILD_CREDENTIAL_HOSTS."""
    listed = {h.strip() for h in str(settings.get("MOLTBUILD_CREDENTIAL_HOSTS", "")).split(",") if h.strip()}
    try:
        return {registry_prefix(settings["MOLTBUILD_REGISTRY"]).host, *listed}
    except ConfigError:
        return listed


def registry_client(host: str, settings: Settings, creds: Credentials | None = None) -> RegistryClient:
    return RegistryClient(
        host,
        username=creds.username if creds else None,
        password=creds.password if creds else None,
        insecure_hosts=settings.insecure_registries,
        ca_bundle=settings.get("MOLTBUILD_REGISTRY_CA") or None,
        timeout=settings.seconds("MOLTBUILD_IDLE_TIMEOUT"),
    )


def preflight_push(
    host: str, settings: Settings, *, registries: Registries, check_registry: bool = True
) -> Credentials | None:
    """Fail before any build when pushing cannot work: missing or refused credentials (asked
    through the run's registry clients)."""
    creds = credentials_for(host, settings)
    if creds is None and host == GHCR:
        raise ConfigError(
            "pushing to ghcr.io needs GITHUB_TOKEN (scope write:packages); "
            "add it to .env.local or the environment"
        )
    if not check_registry:
        return creds
    status = registries.client(host, creds).ping()
    if status == 401:
        if creds is None:
            raise ConfigError(
                f"{host} requires credentials; set REGISTRY_USERNAME and REGISTRY_PASSWORD "
                "(in .env.local or the environment)"
            )
        raise RegistryError(
            f"{host} rejected the credentials from {creds.keys} (user {creds.username!r}); check them"
        )
    if transient_status(status):  # after the client's own retries
        raise RegistryError(
            f"{host}: GET /v2/ answered HTTP {status} after retries: the registry is overloaded or "
            "down; try again later (nothing was built or pushed)"
        )
    if status >= 400:
        raise RegistryError(f"{host}: GET /v2/ answered HTTP {status}; is this a container registry?")
    return creds


class Registries:
    """One client per registry host for a whole run: one kept-alive session and one token per
    scope, shared by every step and thread of the run (reuse, push, tags, verify)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._clients: dict[str, RegistryClient] = {}
        self._lock = threading.Lock()

    def client(self, host: str, creds: Credentials | None = None) -> RegistryClient:
        """The run's client for `host`, made on first use with `creds` (default: the settings')."""
        with self._lock:
            if host not in self._clients:
                chosen = creds if creds is not None else credentials_for(host, self.settings)
                self._clients[host] = registry_client(host, self.settings, chosen)
            return self._clients[host]


DOCKER_HUB_KEY = "https://index.docker.io/v1/"


def keychain_key(host: str) -> str:
    """The key Docker-config readers (go-containerregistry's keychain: the kaniko executor, syft,
    cosign) look a host up by: Docker Hub's credentials live under its legacy index URL."""
    return DOCKER_HUB_KEY if host in ("docker.io", "index.docker.io", "registry-1.docker.io") else host


def docker_config(logins: Mapping[str, Credentials]) -> dict:
    """A Docker config.json body holding `logins` (for a file or a Secret, never argv)."""
    auths = {}
    for host, creds in logins.items():
        pair = f"{creds.username}:{creds.password.reveal()}".encode()
        auths[keychain_key(host)] = {"auth": base64.b64encode(pair).decode()}
    return {"auths": auths}
