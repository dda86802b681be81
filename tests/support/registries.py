"""Registry modes only the tests need: basic auth, TLS with a private CA, bearer tokens."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from moltbuild.registry.local import LocalRegistry
from moltbuild.system.processes import Runner


@dataclass
class TLSFiles:
    cert: Path
    key: Path
    ca: Path


class TestRegistry(LocalRegistry):
    __test__ = False  # not a pytest class

    def __init__(
        self,
        data_dir: Path,
        *,
        htpasswd: Path | None = None,
        tls: TLSFiles | None = None,
        token_auth: dict[str, str] | None = None,  # realm, service, issuer, rootcertbundle
        address: str = "127.0.0.1",  # another of this machine's addresses: a registry not on loopback
    ):
        super().__init__(data_dir, Runner(environ=os.environ))
        self.address = address
        self.htpasswd = htpasswd
        self.tls = tls
        self.token_auth = token_auth

    @property
    def host(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def verify(self) -> str | bool:
        if self.tls and self.address != "127.0.0.1":
            return False  # the test certificate names 127.0.0.1 only
        return str(self.tls.ca) if self.tls else True

    def extra_config(self) -> list[str]:
        lines = []
        if self.tls:
            lines.append(f"  tls: {{certificate: {self.tls.cert}, key: {self.tls.key}}}")
        if self.htpasswd:
            lines.append(f"auth: {{htpasswd: {{realm: moltbuild, path: {self.htpasswd}}}}}")
        elif self.token_auth:
            t = self.token_auth
            lines.append(
                f"auth: {{token: {{realm: {t['realm']}, service: {t['service']}, "
                f"issuer: {t['issuer']}, rootcertbundle: {t['rootcertbundle']}}}}}"
            )
        return lines
