"""Does a digest carry what a release needs: a signature by the expected signer, SLSA provenance
for exactly this digest (and the recorded commit), and an SBOM? With a verifier (a public key or
a keyless identity) cosign decides, as a user's `cosign verify` would; without one the attached
statements are read from the registry and the answer says the signature went unchecked."""

from __future__ import annotations

from dataclasses import dataclass

from moltbuild.refs import ImageRef
from moltbuild.registry.client import RegistryClient
from moltbuild.supply import attached
from moltbuild.supply.cosign import Cosign, Verifier
from moltbuild.supply.provenance import (
    PROVENANCE_TYPE,
    SBOM_TYPES,
    commit_of,
    decode_envelope,
    input_digest_of,
    subject_digests,
)
from moltbuild.system.processes import Result

SBOM_KINDS = tuple(SBOM_TYPES)


@dataclass(frozen=True)
class Finding:
    ok: bool
    reason: str  # what is wrong, or on success what was checked


def _last_line(res: Result) -> str:
    lines = [
        line for line in (res.stderr or "").splitlines() if line.strip() and not line.startswith("WARNING")
    ]
    last = lines[-1] if lines else ""
    last = last.removeprefix("Error: ").removeprefix("error during command execution:").strip()
    return last[:200] or f"exit {res.returncode}"


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
        return (
            f"the provenance names commit {commit_of(mine[0])[:12] or '(none)'} and other inputs, "
            f"the report {expected.commit[:12]}"
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
        return Finding(False, f"no signature by {verifier.describe()} ({_last_line(signed)})")
    proven = cosign.verify_attestation(by_digest, verifier, "provenance")
    if not proven.ok:
        return Finding(False, f"no SLSA provenance signed by {verifier.describe()} ({_last_line(proven)})")
    statements = [s for s in map(decode_envelope, proven.stdout.splitlines()) if s]
    problem = _statement_problem(statements, digest, expected)
    if problem:
        return Finding(False, problem)
    if not any(cosign.verify_attestation(by_digest, verifier, kind).ok for kind in SBOM_KINDS):
        return Finding(False, f"no SBOM attestation signed by {verifier.describe()}")
    return Finding(True, f"signed by {verifier.describe()}; provenance and SBOM attested")


def without_verifier(client: RegistryClient, ref: ImageRef, digest: str, expected: Expected) -> Finding:
    found = attached.read(client, ref.repository, digest)
    statements = [a.statement for a in found if a.predicate_type == PROVENANCE_TYPE]
    problem = _statement_problem(statements, digest, expected)
    if problem:
        return Finding(False, problem)
    if not any(a.predicate_type in SBOM_TYPES.values() for a in found):
        return Finding(False, "no SBOM attached")
    signed = "signed, " if attached.is_signed(client, ref.repository, digest) else "UNSIGNED, "
    return Finding(
        True, f"{signed}provenance and SBOM attached; signature not checked (no MOLTBUILD_VERIFY_KEY)"
    )
