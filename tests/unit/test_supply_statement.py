"""The statement moltbuild writes unsigned is the one `cosign attest` makes of the same predicate:
one in-toto `_type`, the same field names (bar cosign v2's `invocationID`, which readers accept),
and it parses with the in-toto attestation framework's own bindings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import json_format
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import STATEMENT_TYPE_URI, Statement

from moltbuild.supply import attached, check
from moltbuild.supply.provenance import (
    PROVENANCE_TYPE,
    STATEMENT_TYPE,
    decode_envelope,
    invocation_of,
    predicate,
    statement,
)
from tests.unit.test_supply import COMMIT, DIGEST, facts

# What cosign v2.6.5 `attest-blob --type slsaprovenance1` signed for GITHUB facts (dirty tree),
# decoded from its envelope: the same code path as `cosign attest` on an image.
COSIGN = json.loads((Path(__file__).parents[1] / "support/cosign/provenance-v2.6.5.json").read_text())
GITHUB = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_REPOSITORY": "ardenone/moltbook-org",
    "GITHUB_RUN_ID": "42",
    "GITHUB_RUN_ATTEMPT": "2",
    "GITHUB_WORKFLOW_REF": "ardenone/moltbook-org/.github/workflows/build-images.yml@refs/heads/main",
}


def written() -> dict:
    """The statement as the unsigned path stores it, read back from its envelope."""
    body = predicate(facts(environ=GITHUB, dirty=True))
    found = decode_envelope(
        attached.envelope(statement("reg.example:5000/ns/moltbook-api", DIGEST, PROVENANCE_TYPE, body))
    )
    assert found is not None
    return found


def test_unsigned_and_signed_statements_have_one_type_and_the_same_fields():
    ours, theirs = written(), json.loads(json.dumps(COSIGN))
    assert ours["_type"] == theirs["_type"] == STATEMENT_TYPE == "https://in-toto.io/Statement/v0.1"
    assert ours["predicateType"] == theirs["predicateType"] == PROVENANCE_TYPE
    # cosign v2 re-spells the one key (in-toto-golang's struct tag); nothing else changes
    metadata = theirs["predicate"]["runDetails"]["metadata"]
    metadata["invocationId"] = metadata.pop("invocationID")
    # these two follow moltbuild's version and URL, not the format
    theirs["predicate"]["buildDefinition"]["buildType"] = ours["predicate"]["buildDefinition"]["buildType"]
    theirs["predicate"]["runDetails"]["builder"] = ours["predicate"]["runDetails"]["builder"]
    assert ours["predicate"] == theirs["predicate"]


def test_verify_reads_the_run_under_either_spelling():
    run = "https://github.com/ardenone/moltbook-org/actions/runs/42/attempts/2"
    assert invocation_of(written()) == invocation_of(COSIGN) == run
    assert invocation_of({"predicate": {"runDetails": {}}}) == invocation_of({}) == ""
    signed = json.loads(json.dumps(COSIGN)) | {"subject": [{"name": "r", "digest": {"sha256": DIGEST[7:]}}]}
    problem = check._statement_problem([signed], DIGEST, check.Expected("d" * 40, "sha256:" + "e" * 64))
    assert problem.endswith(f"(built by {run})") and COMMIT[:12] in problem


def test_the_statement_parses_with_the_in_toto_attestation_bindings():
    found = written()
    parsed = json_format.ParseDict(found, statement_pb2.Statement())  # unknown fields are errors
    assert parsed.type == STATEMENT_TYPE
    # the bindings' validate() knows only Statement/v1; every other check runs on ours
    as_v1 = Statement.copy_from_pb(parsed)
    as_v1.pb.type = STATEMENT_TYPE_URI
    as_v1.validate()
    provenance = json_format.ParseDict(found["predicate"], provenance_pb2.Provenance())
    assert provenance.run_details.metadata.invocation_id.endswith("/runs/42/attempts/2")
    assert provenance.build_definition.resolved_dependencies[0].annotations["dirty"] is True
    assert provenance.run_details.metadata.started_on.ToJsonString() == "2026-12-01T10:00:00Z"


def test_cosigns_spelling_is_not_slsa_v1s():
    """Why moltbuild writes `invocationId`: the SLSA v1 schema has no `invocationID`."""
    with pytest.raises(json_format.ParseError, match="invocationID"):
        json_format.ParseDict(COSIGN["predicate"], provenance_pb2.Provenance())
