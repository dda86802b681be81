"""Does a digest carry what a release needs: a signature by the expected signer, SLSA provenance
for exactly this digest (and the recorded commit), and an SBOM? With a verifier (a public key or
a keyless identity) cosign decides, as a user's `cosign verify` would; without one the attached
statements are read from the registry. `Policy` says, once, when an unsigned image fails."""

from __future__ import annotations

from dataclasses import dataclass

from moltbuild.refs import ImageRef
from moltbuild.registry.client import RegistryClient
from moltbuild.settings import Settings
from moltbuild.supply import attached
from moltbuild.supply.cosign import Cosign, Verifier, last_line
from moltbuild.supply.provenance import (
    PROVENANCE_TYPE,
    SBOM_TYPES,
    commit_of,
    decode_envelope,
    input_digest_of,
    invocation_of,
    subject_digests,
)

SBOM_KINDS = tuple(SBOM_TYPES)


OK, UNSIGNED, UNATTESTED = "ok", "unsigned", "unattested"  # `unsigned` passes, and says so
SIGNING_SETTINGS = ("MOLTBUILD_SIGNING_KEY", "MOLTBUILD_VERIFY_KEY", "MOLTBUILD_VERIFY_IDENTITY")
UNCHECKED = (
    "signatures not checked: no MOLTBUILD_VERIFY_KEY, MOLTBUILD_VERIFY_IDENTITY or MOLTBUILD_SIGNING_KEY "
    "is set and MOLTBUILD_ATTEST is not on, so rows say `unsigned`; set one (or pass --require-signed) "
    "to fail unsigned images"
)


@dataclass(frozen=True)
class Finding:
    verdict: str  # OK, UNSIGNED or UNATTESTED
    reason: str  # what is wrong, or on success what was checked

    @property
    def ok(self) -> bool:
        return self.verdict == OK


@dataclass(frozen=True)
class Policy:
    """The verify policy, stated once: when anything configures signing or verification, an unsigned
    or unattested image fails; with nothing configured, no image is `ok` on its signature: each
    says `unsigned` and `unchecked()` is the line that says what was not checked."""

    verifier: Verifier | None = None  # cosign decides whose signature it is
    required_by: tuple[str, ...] = ()  # the settings that make a signature required

    @classmethod
    def from_settings(cls, settings: Settings, *, require_signed: bool = False) -> Policy:
        """`require_signed` (verify's --require-signed) requires a signature whatever is set."""
        required = [key for key in SIGNING_SETTINGS if settings.get(key)]
        if settings.choice("MOLTBUILD_ATTEST") == "on":
            required.append("MOLTBUILD_ATTEST=on")
        required += ["--require-signed"] if require_signed else []
        return cls(Verifier.from_settings(settings), tuple(required))

    def unchecked(self) -> str:
        return "" if self.required_by else UNCHECKED


@dataclass(frozen=True)
class Expected:
    """What the report says about a digest ('' when it does not know: a pinned entry only)."""

    commit: str = ""
    input_digest: str = ""


def _statement_problem(statements: list[dict], digest: str, expected: Expected) -> str:
    if not statements:
        return "no SLSA provenance attached"
    mine = [s for s in statements if digest in subject_digests(s)]
    if not mine:
        return f"the provenance is for another digest ({_subjects(statements)}), not {digest[:19]}"
    if expected.commit and not any(_vouches(s, expected) for s in mine):
        run = invocation_of(mine[0])  # signed by cosign v2 it is spelt `invocationID`: either is read
        return (
            f"the provenance names commit {commit_of(mine[0])[:12] or '(none)'} and other inputs, "
            f"the report {expected.commit[:12]}" + (f" (built by {run})" if run else "")
        )
    return ""


def _subjects(statements: list[dict]) -> str:
    return ", ".join(sorted(d[:19] for s in statements for d in subject_digests(s))) or "none"


def _vouches(statement: dict, expected: Expected) -> bool:
    """A reused image was built from an earlier commit with the same inputs: either vouches for it."""
    if commit_of(statement) == expected.commit:
        return True
    return bool(expected.input_digest) and input_digest_of(statement) == expected.input_digest


def with_verifier(
    cosign: Cosign, ref: ImageRef, digest: str, expected: Expected, verifier: Verifier
) -> Finding:
    by_digest = str(ref.bare().with_digest(digest))
    signed = cosign.verify(by_digest, verifier)
    if not signed.ok:
        return Finding(UNATTESTED, f"no signature by {verifier.describe()} ({last_line(signed)})")
    proven = cosign.verify_attestation(by_digest, verifier, "provenance")
    if not proven.ok:
        return Finding(
            UNATTESTED, f"no SLSA provenance signed by {verifier.describe()} ({last_line(proven)})"
        )
    statements = [s for s in map(decode_envelope, proven.stdout.splitlines()) if s]
    problem = _statement_problem(statements, digest, expected)
    if problem:
        return Finding(UNATTESTED, problem)
    if not any(cosign.verify_attestation(by_digest, verifier, kind).ok for kind in SBOM_KINDS):
        return Finding(UNATTESTED, f"no SBOM attestation signed by {verifier.describe()}")
    return Finding(OK, f"signed by {verifier.describe()}; provenance and SBOM attested")


def without_verifier(
    client: RegistryClient, ref: ImageRef, digest: str, expected: Expected, policy: Policy
) -> Finding:
    """What the registry holds, read directly: the signature is there or not, its signer unknown."""
    found = attached.read(client, ref.repository, digest)
    statements = [a.statement for a in found if a.predicate_type == PROVENANCE_TYPE]
    problem = _statement_problem(statements, digest, expected)
    if not problem and not any(a.predicate_type in SBOM_TYPES.values() for a in found):
        problem = "no SBOM attached"
    if problem:
        return Finding(UNATTESTED, problem)
    signed = attached.is_signed(client, ref.repository, digest) and all(a.signed for a in found)
    return _signature_finding(signed, policy)


def _signature_finding(signed: bool, policy: Policy) -> Finding:
    if not policy.required_by:
        what = "a signature is attached, its signer not checked" if signed else "not signed"
        return Finding(UNSIGNED, f"{what}; provenance and SBOM attached")
    if not signed:
        return Finding(UNATTESTED, f"not signed, and {' and '.join(policy.required_by)} requires a signature")
    return Finding(
        OK, "signed, provenance and SBOM attached; signer not checked (MOLTBUILD_VERIFY_KEY is unset)"
    )
