"""Supply chain, below the tools: the provenance document, the DSSE envelopes in cosign's layout,
who signs, what reaches cosign's argv and environment, and what `invoke verify` calls wrong."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest

from moltbuild.errors import CommandError, ConfigError
from moltbuild.settings import Secret, load_settings
from moltbuild.supply import attached, check, sbom
from moltbuild.supply.cosign import Cosign, Mode, Signer, Verifier
from moltbuild.supply.provenance import (
    PROVENANCE_TYPE,
    BuildFacts,
    build_type,
    commit_of,
    decode_envelope,
    predicate,
    purl,
    statement,
    subject_digests,
)
from moltbuild.supply.tools import RegistryAccess
from moltbuild.system.processes import Result, Runner

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64
COMMIT = "c" * 40


def facts(**changes) -> BuildFacts:
    base = {
        "image": "api",
        "repository": "reg.example:5000/ns/moltbook-api",
        "digest": DIGEST,
        "tags": ("sha-ccccccc", "main"),
        "source": "https://github.com/ardenone/moltbook-org",
        "commit": COMMIT,
        "dirty": False,
        "branch": "main",
        "build_args": {"B": "2", "A": "1"},
        "dockerfile": "api/Dockerfile",
        "target": None,
        "platforms": ("linux/amd64",),
        "input_digest": OTHER,
        "bases": {"python:3.12-slim": OTHER, "busybox:1.36": ""},
        "backend": "buildah",
        "backend_detail": "buildah 1.28.2",
        "started": "2026-12-01T10:00:00Z",
        "finished": "2026-12-01T10:01:00Z",
    }
    return BuildFacts(**(base | changes))


def test_provenance_names_commit_args_bases_and_the_machine():
    body = predicate(facts())
    params = body["buildDefinition"]["externalParameters"]
    assert params["source"] == {
        "repository": "https://github.com/ardenone/moltbook-org",
        "commit": COMMIT,
        "dirty": False,
    }
    assert list(params["buildArgs"]) == ["A", "B"]  # sorted: the same inputs, the same document
    deps = body["buildDefinition"]["resolvedDependencies"]
    assert deps[0] == {
        "uri": "git+https://github.com/ardenone/moltbook-org@refs/heads/main",
        "digest": {"gitCommit": COMMIT},
    }
    assert {
        "uri": f"pkg:docker/library/python@sha256:{'b' * 64}?repository_url=docker.io",
        "name": "python:3.12-slim",
        "digest": {"sha256": "b" * 64},
    } in deps
    unresolved = {"uri": "pkg:docker/library/busybox@1.36?repository_url=docker.io", "name": "busybox:1.36"}
    assert unresolved in deps  # no made-up digest
    assert body["runDetails"]["builder"]["id"].startswith("urn:moltbuild:builder:buildah:")
    assert "invocationId" not in body["runDetails"]["metadata"]


def test_builder_ids_are_uris_without_spaces(monkeypatch):
    monkeypatch.setattr("socket.gethostname", lambda: "dev pod/1")
    built = predicate(facts(backend="kaniko"))["runDetails"]["builder"]["id"]
    assert built == "urn:moltbuild:builder:kaniko:dev%20pod%2F1"


def test_a_dirty_tree_claims_no_exact_commit():
    deps = predicate(facts(dirty=True))["buildDefinition"]["resolvedDependencies"]
    assert deps[0] == {
        "uri": "git+https://github.com/ardenone/moltbook-org@refs/heads/main",
        "annotations": {"dirty": True, "headCommit": COMMIT},
    }
    assert not any("gitCommit" in d.get("digest", {}) for d in deps)


def test_a_base_in_a_private_registry_is_a_purl_with_its_host():
    assert purl("reg.example:5000/ns/base:1", "") == "pkg:docker/ns/base@1?repository_url=reg.example:5000"
    assert purl("${UNSET}", "") == "${UNSET}"  # no image name: kept as written


def test_the_build_type_resolves_to_its_document_in_this_repository():
    root = Path(__file__).resolve().parents[2]
    urls = tomllib.loads((root / "pyproject.toml").read_text())["project"]["urls"]
    body = predicate(facts())["buildDefinition"]
    assert body["buildType"] == urls["Repository"] + "/blob/main/docs/buildtype-image-v1.md"
    assert build_type({}) == "urn:moltbuild:buildtype:image:v1"
    doc = (root / "docs" / "buildtype-image-v1.md").read_text()
    for key in [
        *body["externalParameters"],
        *body["internalParameters"],
        *body["externalParameters"]["source"],
    ]:
        assert f"`{key}`" in doc, key


def test_provenance_on_github_names_the_workflow_run():
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_REPOSITORY": "ardenone/moltbook-org",
        "GITHUB_RUN_ID": "42",
        "GITHUB_RUN_ATTEMPT": "2",
        "GITHUB_WORKFLOW_REF": "ardenone/moltbook-org/.github/workflows/build-images.yml@refs/heads/main",
    }
    run = predicate(facts(environ=env))["runDetails"]
    assert run["builder"]["id"] == (
        "https://github.com/ardenone/moltbook-org/.github/workflows/build-images.yml@refs/heads/main"
    )
    assert (
        run["metadata"]["invocationId"]
        == "https://github.com/ardenone/moltbook-org/actions/runs/42/attempts/2"
    )


def test_an_unsigned_envelope_round_trips_and_names_its_subject():
    found = decode_envelope(attached.envelope(statement("r/x", DIGEST, PROVENANCE_TYPE, predicate(facts()))))
    assert found is not None and subject_digests(found) == {DIGEST} and commit_of(found) == COMMIT
    assert json.loads(attached.envelope({"predicateType": "x"}))["signatures"] == []
    assert decode_envelope(b"not json") is None and decode_envelope(json.dumps({"payloadType": "x"})) is None
    assert attached.tag_for(DIGEST, "att") == "sha256-" + "a" * 64 + ".att"


def _built() -> list[dict]:
    return [statement("r", DIGEST, PROVENANCE_TYPE, predicate(facts()))]  # commit c..., inputs b...


@pytest.mark.parametrize(
    ("statements", "expected", "wanted"),
    [
        ([], check.Expected(), "no SLSA provenance attached"),
        (
            [statement("r", OTHER, PROVENANCE_TYPE, predicate(facts()))],
            check.Expected(),
            "for another digest (sha256:bbbbbbbbbbbb)",
        ),
        (
            _built(),
            check.Expected("d" * 40, "sha256:" + "e" * 64),
            "names commit cccccccccccc and other inputs",
        ),
        (_built(), check.Expected(COMMIT, "sha256:" + "e" * 64), ""),
        (_built(), check.Expected("d" * 40, OTHER), ""),  # reused: an earlier commit, the same inputs
        (_built(), check.Expected(), ""),  # a pinned entry the report does not know
    ],
)
def test_what_verify_calls_wrong_in_a_provenance(statements, expected, wanted):
    problem = check._statement_problem(statements, DIGEST, expected)
    assert (wanted in problem) if wanted else problem == ""


def settings(tmp_path: Path, **environ: str):
    return load_settings(tmp_path, environ=environ, tool_config={})


def test_who_signs_key_then_github_oidc_then_nobody(tmp_path):
    key = tmp_path / "cosign.key"
    key.write_text("k")
    signer = Signer.from_settings(
        settings(tmp_path, MOLTBUILD_SIGNING_KEY=str(key), MOLTBUILD_SIGNING_PASSWORD="pw-canary-1"), {}
    )
    assert signer.mode is Mode.KEY and signer.key == str(key) and signer.password == Secret("pw-canary-1")
    oidc = {"ACTIONS_ID_TOKEN_REQUEST_URL": "https://x", "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "t"}
    assert Signer.from_settings(settings(tmp_path), oidc).mode is Mode.KEYLESS
    assert Signer.from_settings(settings(tmp_path), {"GITHUB_ACTIONS": "true"}).mode is Mode.UNSIGNED
    assert "not signed" in Signer(Mode.UNSIGNED).describe()


def test_a_key_setting_that_is_not_a_file_names_the_key_and_the_fix(tmp_path):
    with pytest.raises(
        ConfigError, match=r"MOLTBUILD_VERIFY_KEY=.* is not a file; .*cosign generate-key-pair"
    ):
        settings(tmp_path, MOLTBUILD_VERIFY_KEY=str(tmp_path / "missing.pub"))


def test_verifier_by_key_or_identity(tmp_path):
    pub = tmp_path / "cosign.pub"
    pub.write_text("p")
    assert Verifier.from_settings(settings(tmp_path)) is None
    by_key = Verifier.from_settings(settings(tmp_path, MOLTBUILD_VERIFY_KEY=str(pub)))
    assert by_key.argv() == ["--key", str(pub), "--insecure-ignore-tlog=true"]
    keyless = Verifier.from_settings(settings(tmp_path, MOLTBUILD_VERIFY_IDENTITY="^https://github.com/o/r/"))
    assert keyless.argv() == [
        "--certificate-identity-regexp",
        "^https://github.com/o/r/",
        "--certificate-oidc-issuer",
        "https://token.actions.githubusercontent.com",
    ]


def test_the_password_reaches_cosign_by_environment_and_the_credential_by_file(tmp_path):
    """A stand-in cosign records its argv, COSIGN_PASSWORD and DOCKER_CONFIG: the password and the
    registry credential are in neither argv nor the logs."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "record.json"
    fake = bindir / "cosign"
    fake.write_text(
        "#!/usr/bin/env python3\nimport json, os, sys\n"
        f"open({str(record)!r}, 'a').write(json.dumps({{'argv': sys.argv[1:], "
        "'password': os.environ.get('COSIGN_PASSWORD'), "
        "'auth': open(os.environ['DOCKER_CONFIG'] + '/config.json').read()}) + '\\n')\n"
    )
    fake.chmod(0o755)
    key = tmp_path / "cosign.key"
    key.write_text("k")
    s = settings(
        tmp_path,
        MOLTBUILD_REGISTRY="reg.example:5000/ns",
        MOLTBUILD_INSECURE_REGISTRIES="reg.example:5000",
        REGISTRY_USERNAME="bot",
        REGISTRY_PASSWORD="registry-canary-2",
        MOLTBUILD_SIGNING_KEY=str(key),
        MOLTBUILD_SIGNING_PASSWORD="pw-canary-1",
    )
    said: list[str] = []
    runner = Runner(secrets=s.secrets, out=said.append, environ={"PATH": f"{bindir}:{os.environ['PATH']}"})
    cosign = Cosign(runner, RegistryAccess.prepare("reg.example:5000", s, tmp_path / "work"))
    predicate_file = tmp_path / "p.json"
    predicate_file.write_text("{}")
    ref = f"reg.example:5000/ns/api@{DIGEST}"
    signer = Signer.from_settings(s, {})
    cosign.sign(ref, signer)
    cosign.attest(ref, signer, "provenance", predicate_file)
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert calls[0]["argv"][:5] == ["sign", "--yes", "--key", str(key), "--tlog-upload=false"]
    assert "--allow-http-registry" in calls[0]["argv"] and calls[0]["argv"][-1] == ref
    assert (
        calls[1]["argv"][calls[1]["argv"].index("--type") + 1] == "slsaprovenance1"
        and "--replace" in calls[1]["argv"]
    )
    for call in calls:
        assert call["password"] == "pw-canary-1"
        assert not any("canary" in arg for arg in call["argv"])
        assert "reg.example:5000" in json.loads(call["auth"])["auths"]
    assert not any("canary" in line for line in said)
    assert oct((tmp_path / "work" / "docker-config" / "config.json").stat().st_mode & 0o777) == "0o600"


def test_the_report_keeps_the_references_and_older_reports_read_without_them():
    from moltbuild.flows.summary import attestation_of, render
    from tests.unit.records import image_record, pushed_entry

    old = image_record(pushed_entry("api"))
    assert (old.sbom, old.provenance, old.signature) == ("", "", "")
    att = "reg.example:5000/ns/moltbook-api:sha256-" + "2" * 64 + ".att"
    signed = image_record(
        pushed_entry("api", sbom=att, provenance=att, signature=att.replace(".att", ".sig"))
    )
    assert signed.to_dict()["signature"].endswith(".sig")
    assert attestation_of(signed).startswith("signed (") and "UNSIGNED" in attestation_of(
        signed.but(signature="unsigned")
    )
    table = render([old, signed], None, None)
    assert table.count("provenance") == 1  # only the attested image says so


def test_attest_off_on_and_auto_without_the_tools(tmp_path, capsys):
    from moltbuild.flows import attest
    from moltbuild.flows.context import Session

    def session(mode: str, said: list[str]) -> Session:
        s = settings(tmp_path, MOLTBUILD_ATTEST=mode)
        return Session(
            settings=s, runner=Runner(out=said.append, environ={"PATH": str(tmp_path)}), environ={}
        )

    said: list[str] = []
    assert attest.wanted(session("off", said)) is False and said == []
    with pytest.raises(
        ConfigError, match="MOLTBUILD_ATTEST=on but syft and cosign not installed: run `invoke setup`"
    ):
        attest.preflight(session("on", said))
    assert capsys.readouterr().err == ""
    assert attest.wanted(session("auto", said)) is False
    warned = capsys.readouterr().err.splitlines()
    assert (
        len(warned) == 1
        and "no SBOM, provenance or signature" in warned[0]
        and "MOLTBUILD_ATTEST=off" in warned[0]
    )


def test_a_docker_hub_push_target_reaches_syft_and_cosign_under_the_keychain_key(tmp_path):
    """go-containerregistry's keychain (syft, cosign, the kaniko executor) reads Docker Hub's
    credentials under its legacy index URL, never under docker.io."""
    s = settings(
        tmp_path,
        MOLTBUILD_REGISTRY="docker.io/ardenone",
        REGISTRY_USERNAME="bot",
        REGISTRY_PASSWORD="pw-canary-3",
    )
    access = RegistryAccess.prepare("docker.io", s, tmp_path / "work")
    auths = json.loads((access.config_dir / "config.json").read_text())["auths"]
    assert list(auths) == ["https://index.docker.io/v1/"]


SYFT_ERROR = (
    "[0000] ERROR \x1b[31mcould not determine source: errors occurred resolving 'r/x@sha256:00':\n"
    "  - oci-registry: failed to get image descriptor from registry: connection refused\x1b[0m\n"
)


class ScriptedSyft(Runner):
    """Fails as syft does on an unreachable registry: with --quiet it prints nothing at all."""

    def __init__(self, bindir: Path):
        super().__init__(out=lambda _: None, environ={"PATH": str(bindir)}, secrets=["hunter22"])
        (bindir / "syft").write_text("")
        (bindir / "syft").chmod(0o755)
        self.calls: list[list[str]] = []

    def run(self, argv, **kwargs):
        self.calls.append(argv)
        result = Result(argv, 1, "", "" if "--quiet" in argv else SYFT_ERROR + "token hunter22\n")
        if kwargs.get("check", True):
            raise self._failure(argv, 1, result.stderr, kwargs.get("what", ""))
        return result


def test_a_syft_failure_says_what_syft_said(tmp_path):
    runner = ScriptedSyft(tmp_path)
    access = RegistryAccess("r", plain_http=False, ca="", config_dir=tmp_path)
    with pytest.raises(CommandError) as exc:
        sbom.generate(runner, "r/x@sha256:00", access, "spdx-json", tmp_path / "sbom.json")
    line = str(exc.value)
    assert line.startswith("syft SBOM of r/x@sha256:00 failed with exit code 1: could not determine source")
    assert "oci-registry: failed to get image descriptor from registry: connection refused" in line
    assert "\x1b" not in line and "\n" not in line and "hunter22" not in line
