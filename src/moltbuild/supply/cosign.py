"""cosign, the one signer and verifier: the image signed by digest, provenance and SBOM attached
as attestations in cosign's tag scheme (`sha256-<hex>.sig` / `.att`, what registries without the
OCI referrers API need), so a user's own `cosign verify` agrees with `invoke verify`.

A key signs without the public transparency log (private image names stay private; nothing
reaches Rekor from a laptop); keyless (GitHub's OIDC identity) goes through Fulcio and Rekor as
sigstore intends. The key's password (MOLTBUILD_SIGNING_PASSWORD, else the user's own
COSIGN_PASSWORD) reaches cosign as COSIGN_PASSWORD, never in argv; `check_key` opens the key
before any build."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from moltbuild.errors import ConfigError
from moltbuild.settings import Secret, Settings
from moltbuild.supply.tools import RegistryAccess, require_tool
from moltbuild.system.processes import Result, Runner

PREDICATE_TYPES = {
    "provenance": "slsaprovenance1",
    "spdx-json": "spdxjson",
    "cyclonedx-json": "cyclonedx",
}


class Mode(enum.Enum):
    KEY = "key"
    KEYLESS = "keyless"
    UNSIGNED = "unsigned"


@dataclass(frozen=True)
class Signer:
    mode: Mode
    key: str = ""
    password: Secret | None = None

    @classmethod
    def from_settings(cls, settings: Settings, environ: Mapping[str, str]) -> Signer:
        key = settings.get("MOLTBUILD_SIGNING_KEY")
        if key:
            # cosign's own COSIGN_PASSWORD counts too: a cosign user already has it set.
            password = settings.get("MOLTBUILD_SIGNING_PASSWORD") or settings.get("COSIGN_PASSWORD") or None
            return cls(Mode.KEY, str(Path(key).expanduser()), password)
        # GitHub Actions with `id-token: write` hands out an OIDC token: cosign signs keyless.
        if environ.get("ACTIONS_ID_TOKEN_REQUEST_URL") and environ.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN"):
            return cls(Mode.KEYLESS)
        return cls(Mode.UNSIGNED)

    def describe(self) -> str:
        return {
            Mode.KEY: f"signed with the key {self.key}",
            Mode.KEYLESS: "signed keyless (GitHub OIDC identity, Fulcio + Rekor)",
            Mode.UNSIGNED: "not signed: no MOLTBUILD_SIGNING_KEY and no GitHub OIDC token",
        }[self.mode]


@dataclass(frozen=True)
class Verifier:
    key: str = ""  # a public key file
    identity: str = ""  # keyless: certificate identity regexp
    issuer: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> Verifier | None:
        key, identity = settings.get("MOLTBUILD_VERIFY_KEY"), settings.get("MOLTBUILD_VERIFY_IDENTITY")
        if key:
            return cls(key=str(Path(key).expanduser()))
        if identity:
            return cls(identity=identity, issuer=settings.get("MOLTBUILD_VERIFY_ISSUER", ""))
        return None

    def argv(self) -> list[str]:
        if self.key:
            return ["--key", self.key, "--insecure-ignore-tlog=true"]
        return ["--certificate-identity-regexp", self.identity, "--certificate-oidc-issuer", self.issuer]

    def describe(self) -> str:
        return f"the key {self.key}" if self.key else f"the identity {self.identity} ({self.issuer})"


def keyless_identity(environ: Mapping[str, str]) -> str:
    """The certificate identity a keyless signature made in this GitHub workflow run carries
    (SERVER/OWNER/REPO/.github/workflows/FILE@REF: the ref the run is on); '' outside a workflow."""
    workflow = environ.get("GITHUB_WORKFLOW_REF", "")
    return f"{environ.get('GITHUB_SERVER_URL', 'https://github.com')}/{workflow}" if workflow else ""


def identity_refusal(signer: Signer, verifier: Verifier | None, environ: Mapping[str, str]) -> str:
    """Why this run must not sign: its keyless identity is one MOLTBUILD_VERIFY_IDENTITY does not
    admit, so its own verify would refuse what it signs ('' when it would pass, or cannot be told)."""
    identity = keyless_identity(environ)
    if signer.mode is not Mode.KEYLESS or verifier is None or not verifier.identity or not identity:
        return ""
    if re.search(verifier.identity, identity):
        return ""
    return (
        f"this run would sign keyless as {identity}, which MOLTBUILD_VERIFY_IDENTITY "
        f"({verifier.identity}) does not admit, so its own verify would fail: nothing is built or "
        "signed; run it on a ref the identity admits (this workflow: main or a v* tag)"
    )


class Cosign:
    def __init__(self, runner: Runner, access: RegistryAccess):
        self.runner = runner
        self.access = access
        self.binary = require_tool(runner, "cosign")

    def _registry_argv(self) -> list[str]:
        argv = ["--allow-http-registry", "--allow-insecure-registry"] if self.access.plain_http else []
        return [*argv, "--registry-cacert", self.access.ca] if self.access.ca else argv

    def _env(self, signer: Signer | None = None) -> dict[str, str]:
        env = {"DOCKER_CONFIG": str(self.access.config_dir), "COSIGN_YES": "true"}
        if signer is not None and signer.mode is Mode.KEY:
            env["COSIGN_PASSWORD"] = signer.password.reveal() if signer.password else ""  # never argv
        return env

    def _signer_argv(self, signer: Signer) -> list[str]:
        if signer.mode is Mode.KEY:
            return ["--key", signer.key, "--tlog-upload=false"]
        return []

    def sign(self, ref: str, signer: Signer) -> None:
        self.runner.run(
            [self.binary, "sign", "--yes", *self._signer_argv(signer), *self._registry_argv(), ref],
            env=self._env(signer),
            timeout=300,
            what=f"cosign sign {ref}",
        )

    def attest(self, ref: str, signer: Signer, kind: str, predicate: Path) -> None:
        """Attach a signed attestation (replacing one of the same predicate type)."""
        argv = self._attest_argv(ref, signer, kind, predicate, "--replace")
        self.runner.run(argv, env=self._env(signer), timeout=300, what=f"cosign attest ({kind}) {ref}")

    def envelope(self, ref: str, signer: Signer, kind: str, predicate: Path) -> bytes:
        """The signed DSSE envelope `attest` would attach, not uploaded: with a key and no
        transparency log it is all the layer holds, so several go up in one `.att` write."""
        argv = self._attest_argv(ref, signer, kind, predicate, "--no-upload=true")
        res = self.runner.run(argv, env=self._env(signer), timeout=300, what=f"cosign attest ({kind}) {ref}")
        return res.stdout.strip().encode()

    def _attest_argv(self, ref: str, signer: Signer, kind: str, predicate: Path, *extra: str) -> list[str]:
        argv = [self.binary, "attest", "--yes", *extra, *self._signer_argv(signer), *self._registry_argv()]
        return [*argv, "--type", PREDICATE_TYPES[kind], "--predicate", str(predicate), ref]

    def public_key(self, signer: Signer, out: Path) -> Path:
        """The public half of the signing key (written once per run)."""
        if not out.is_file():
            self.runner.run(
                [self.binary, "public-key", "--key", signer.key, "--outfile", str(out)],
                env=self._env(signer),
                timeout=60,
                what="cosign public-key",
            )
        return out

    def check_key(self, signer: Signer, out: Path) -> None:
        """The signing key opens with its password: found before any build, not after the push."""
        res = self.runner.run(
            [self.binary, "public-key", "--key", signer.key, "--outfile", str(out)],
            env=self._env(signer),
            timeout=60,
            check=False,
            mutates=False,
            what="cosign public-key",
        )
        if res.ok:
            return
        given = "the password given" if signer.password else "an empty password"
        raise ConfigError(
            f"MOLTBUILD_SIGNING_KEY={signer.key} does not open with {given} ({last_line(res)}): set its "
            "password in MOLTBUILD_SIGNING_PASSWORD (or cosign's COSIGN_PASSWORD)"
        )

    def verify(self, ref: str, verifier: Verifier) -> Result:
        return self.runner.run(
            [self.binary, "verify", *verifier.argv(), *self._registry_argv(), "--output", "json", ref],
            env=self._env(),
            timeout=300,
            check=False,
            mutates=False,
        )

    def verify_attestation(self, ref: str, verifier: Verifier, kind: str) -> Result:
        argv = [self.binary, "verify-attestation", *verifier.argv(), *self._registry_argv()]
        argv += ["--type", PREDICATE_TYPES[kind], ref]
        return self.runner.run(argv, env=self._env(), timeout=300, check=False, mutates=False)


def last_line(res: Result) -> str:
    """cosign's own reason, the last line it wrote to stderr that is not a warning."""
    lines = [
        line for line in (res.stderr or "").splitlines() if line.strip() and not line.startswith("WARNING")
    ]
    last = lines[-1] if lines else ""
    last = last.removeprefix("Error: ").removeprefix("error during command execution:").strip()
    return last[:200] or f"exit {res.returncode}"
