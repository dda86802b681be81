"""Trust, below the tools: when `invoke verify` fails an unsigned image (the policy, stated once),
whose signature makes an image "already attested", and the signing key's password (cosign's own
COSIGN_PASSWORD too) checked before any build. cosign is a scripted runner: no process starts."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from moltbuild import report
from moltbuild.errors import ConfigError, RegistryError
from moltbuild.flows import attest as attest_flow
from moltbuild.flows import verify as verify_flow
from moltbuild.flows.context import Session
from moltbuild.refs import ImageRef
from moltbuild.settings import Secret, load_settings
from moltbuild.supply import attached, check
from moltbuild.supply.attest import FROM_REGISTRY, LOCAL_COPY, Attester, LocalSbom
from moltbuild.supply.cosign import PREDICATE_TYPES, Mode, Signer, Verifier
from moltbuild.supply.provenance import PROVENANCE_TYPE, SBOM_TYPES, statement
from moltbuild.supply.tools import RegistryAccess
from moltbuild.system.processes import Result, Runner
from tests.unit.records import image_record, pushed_entry
from tests.unit.test_registry_client import FakeRegistry
from tests.unit.verdicts import storage_verdict

REPO = "ns/moltbook-api"
COMMIT = "a" * 40  # the report's revision (tests.unit.records)


class ScriptedCosign(Runner):
    """Answers `cosign VERB` from a table instead of starting it; records argv and environment."""

    def __init__(self, bindir: Path, answers: dict[str, Result] | None = None):
        super().__init__(out=lambda _: None, environ={"PATH": str(bindir)})
        self.answers, self.calls = answers or {}, []
        for tool in ("cosign", "syft"):  # found on PATH, never run
            (bindir / tool).write_text("")
            (bindir / tool).chmod(0o755)

    def run(self, argv, **kwargs):
        self.calls.append((argv, dict(kwargs.get("env") or {})))
        return self.answers.get(argv[1], Result(argv, 0))


@pytest.fixture()
def fake(httpserver_ipv4: HTTPServer) -> Iterator[FakeRegistry]:
    yield FakeRegistry(httpserver_ipv4)
    httpserver_ipv4.check()


def session(tmp_path: Path, host: str, runner: Runner | None = None, **environ: str) -> Session:
    env = {"MOLTBUILD_INSECURE_REGISTRIES": host, **environ}
    s = Session(
        settings=load_settings(tmp_path, environ=env, tool_config={"registry": f"{host}/ns"}),
        runner=runner or Runner(out=lambda _: None, environ={}),
        environ={},
    )
    s.storage = storage_verdict()
    return s


def attested_image(tmp_path: Path, fake: FakeRegistry, *, signed: bool = False) -> tuple[Path, str]:
    """An image in the report with provenance and an SBOM attached (and, signed, a `.sig`)."""
    digest, _ = fake.add_image(REPO, "sha-1")
    path = tmp_path / "images.json"
    entry = pushed_entry("api", repository=f"{fake.host}/{REPO}", digest=digest, tags=["sha-1"])
    path.write_text(json.dumps(report.document([image_record(entry)])))
    name = f"{fake.host}/{REPO}"
    body = {"buildDefinition": {"externalParameters": {"source": {"commit": COMMIT}}}}
    statements = [
        statement(name, digest, PROVENANCE_TYPE, body),
        statement(name, digest, SBOM_TYPES["spdx-json"], {}),
    ]
    client = session(tmp_path, fake.host).registries.client(fake.host)
    attached.write_unsigned(client, REPO, digest, statements)
    if signed:
        _sign(fake, digest)
    return path, digest


def _sign(fake: FakeRegistry, digest: str) -> None:
    """What `cosign sign` and `cosign attest` leave: a `.sig` and DSSE layers with a signature."""
    media, body = fake.manifests[(REPO, attached.tag_for(digest, "att"))]
    manifest = json.loads(body)
    for layer in manifest["layers"]:  # signed envelopes are new blobs: the client checks each digest
        envelope = json.loads(fake.blobs[(REPO, layer["digest"])])
        signed = json.dumps(envelope | {"signatures": [{"sig": "MEU="}]}).encode()
        layer["digest"], layer["size"] = "sha256:" + hashlib.sha256(signed).hexdigest(), len(signed)
        fake.blobs[(REPO, layer["digest"])] = signed
    body = json.dumps(manifest).encode()
    fake.manifests[(REPO, attached.tag_for(digest, "att"))] = (media, body)
    fake.manifests[(REPO, attached.tag_for(digest, "sig"))] = (media, body)


def test_with_nothing_configured_an_unsigned_image_says_unsigned_and_the_output_says_what_was_not_checked(
    tmp_path, fake, capsys
):
    path, _ = attested_image(tmp_path, fake)
    (row,) = verify_flow.verify(session(tmp_path, fake.host), report_path=path)
    assert row.verdict == "unsigned" and "not signed" in row.reason
    verify_flow.verify_and_show(session(tmp_path, fake.host), report_path=path)  # passes
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == check.UNCHECKED and "MOLTBUILD_VERIFY_KEY" in out[-1]


def test_a_signed_image_is_not_ok_either_while_nothing_says_whose_signature_counts(tmp_path, fake):
    path, _ = attested_image(tmp_path, fake, signed=True)
    (row,) = verify_flow.verify(session(tmp_path, fake.host), report_path=path)
    assert row.verdict == "unsigned" and "signer not checked" in row.reason


@pytest.mark.parametrize("setting", ["MOLTBUILD_SIGNING_KEY", "MOLTBUILD_ATTEST"])
def test_once_signing_is_configured_an_unsigned_image_fails_verify(tmp_path, fake, setting, capsys):
    key = tmp_path / "cosign.key"
    key.write_text("k")
    value = str(key) if setting == "MOLTBUILD_SIGNING_KEY" else "ON"  # read as a choice: any case
    path, _ = attested_image(tmp_path, fake)
    s = session(tmp_path, fake.host, **{setting: value})
    (row,) = verify_flow.verify(s, report_path=path)
    assert row.verdict == "unattested" and "requires a signature" in row.reason
    with pytest.raises(RegistryError, match="1 of 1 checks failed"):
        verify_flow.verify_and_show(s, report_path=path)
    assert check.UNCHECKED not in capsys.readouterr().out


@pytest.mark.parametrize("attest", ["auto", "off"])
def test_require_signed_fails_an_unsigned_image_with_nothing_else_configured(tmp_path, fake, attest, capsys):
    path, _ = attested_image(tmp_path, fake)
    s = session(tmp_path, fake.host, MOLTBUILD_ATTEST=attest)
    (row,) = verify_flow.verify(s, report_path=path, require_signed=True)
    assert row.verdict == "unattested" and "--require-signed requires a signature" in row.reason
    with pytest.raises(RegistryError, match="1 of 1 checks failed"):
        verify_flow.verify_and_show(s, report_path=path, require_signed=True)
    assert check.UNCHECKED not in capsys.readouterr().out
    with pytest.raises(ConfigError, match="--require-signed and --no-attestations contradict"):
        verify_flow.verify(s, report_path=path, require_signed=True, attestations=False)


def test_the_policy_names_what_requires_a_signature(tmp_path):
    pub = tmp_path / "cosign.pub"
    pub.write_text("p")
    none = check.Policy.from_settings(load_settings(tmp_path, environ={}, tool_config={}))
    assert none == check.Policy() and none.unchecked() == check.UNCHECKED
    env = {"MOLTBUILD_VERIFY_KEY": str(pub), "MOLTBUILD_ATTEST": "on"}
    keyed = check.Policy.from_settings(load_settings(tmp_path, environ=env, tool_config={}))
    assert keyed.required_by == ("MOLTBUILD_VERIFY_KEY", "MOLTBUILD_ATTEST=on") and keyed.unchecked() == ""
    assert keyed.verifier == Verifier(key=str(pub))


def attester(tmp_path: Path, fake: FakeRegistry, runner: Runner, verifier: Verifier | None) -> Attester:
    s = session(tmp_path, fake.host)
    return Attester(
        runner=runner,
        client=s.registries.client(fake.host),
        access=RegistryAccess.prepare(fake.host, s.settings, tmp_path / "work"),
        signer=Signer(Mode.KEYLESS),
        sbom_format="spdx-json",
        workdir=tmp_path / "work",
        verifier=verifier,
    )


def test_already_attested_counts_only_a_signature_the_configured_identity_verifies(tmp_path, fake):
    _, digest = attested_image(tmp_path, fake, signed=True)
    ref = ImageRef.parse(f"{fake.host}/{REPO}", "test")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    identity = Verifier(
        identity="^https://github.com/o/r/", issuer="https://token.actions.githubusercontent.com"
    )
    # Keyless with no identity configured: nobody says whose signature counts, so it is signed again.
    assert attester(tmp_path, fake, ScriptedCosign(bindir), None).already(ref, digest) is None
    stranger = ScriptedCosign(bindir, {"verify": Result([], 1, "", "Error: no matching signatures")})
    assert attester(tmp_path, fake, stranger, identity).already(ref, digest) is None
    assert "--certificate-identity-regexp" in stranger.calls[0][0]
    ours = attester(tmp_path, fake, ScriptedCosign(bindir), identity).already(ref, digest)
    assert ours is not None and ours.signature.endswith(".sig") and ours.note == "already attested"


def test_cosign_password_alone_opens_the_key_before_any_build_and_never_in_argv(tmp_path):
    key = tmp_path / "cosign.key"
    key.write_text("k")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    runner = ScriptedCosign(bindir)
    s = session(
        tmp_path, "reg.example:5000", runner, MOLTBUILD_SIGNING_KEY=str(key), COSIGN_PASSWORD="pw-canary-9"
    )
    assert Signer.from_settings(s.settings, {}).password == Secret("pw-canary-9")
    attest_flow.preflight(s)
    ((argv, env),) = runner.calls
    assert argv[1:4] == ["public-key", "--key", str(key)] and env["COSIGN_PASSWORD"] == "pw-canary-9"
    assert not any("canary" in arg for arg in argv)
    assert "pw-canary-9" in s.settings.secrets  # masked in every log line


@pytest.mark.parametrize("password", ["", "wrong-canary"])
def test_a_key_its_password_does_not_open_stops_before_any_build_naming_both_settings(tmp_path, password):
    key = tmp_path / "cosign.key"
    key.write_text("k")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    failed = Result([], 1, "", "Error: reading key: decrypt: encrypted: decryption failed\nmain.go:74: error")
    runner = ScriptedCosign(bindir, {"public-key": failed})
    env = {"MOLTBUILD_SIGNING_KEY": str(key), "MOLTBUILD_SIGNING_PASSWORD": password}
    with pytest.raises(ConfigError) as raised:
        attest_flow.preflight(session(tmp_path, "reg.example:5000", runner, **env))
    message = raised.value.message
    assert "\n" not in message and "MOLTBUILD_SIGNING_PASSWORD" in message and "COSIGN_PASSWORD" in message
    assert ("an empty password" in message) == (password == "")
    off = session(
        tmp_path,
        "reg.example:5000",
        ScriptedCosign(bindir, {"public-key": failed}),
        MOLTBUILD_ATTEST="off",
        **env,
    )
    attest_flow.preflight(off)  # nothing is signed: the key is not asked


def test_a_push_starts_building_while_setup_still_prepares_a_tool_and_attests_after(tmp_path):
    """Before the first image is built: a tool `invoke setup` is still preparing defers attestation
    to after the push (where attest_and_record waits for it) instead of `start` waiting for it."""
    from filelock import FileLock

    from moltbuild.system import gotools

    bindir = tmp_path / "bin"
    bindir.mkdir()
    runner = ScriptedCosign(bindir)
    runner.environ["HOME"] = str(tmp_path / "home")
    s = session(tmp_path, "reg.example:5000", runner, MOLTBUILD_ATTEST="on")
    lock = gotools.lock_path(gotools.state_dir(runner.environ), "syft")
    lock.parent.mkdir(parents=True)
    with FileLock(str(lock)):  # the background setup building syft
        assert attest_flow.deferred(s)
        off = session(tmp_path, "reg.example:5000", runner, MOLTBUILD_ATTEST="off")
        assert not attest_flow.deferred(off)  # nothing to attest, nothing to wait for
    assert not attest_flow.deferred(s)  # syft ready: attestation starts beside the build
    early = attest_flow.start(s, list, "now")
    assert isinstance(early, attest_flow.Attesting)
    early.close()


class LoopingBlobs(FakeRegistry):
    """Blobs of one repository redirect to themselves (a misconfigured storage redirect)."""

    def handle(self, request):
        from werkzeug import Response

        if request.path.startswith(f"/v2/{REPO}/blobs/sha256:"):
            return Response("", 307, {"Location": request.path})
        return super().handle(request)


def test_a_blob_redirect_loop_is_one_line_before_syft_starts(tmp_path, httpserver_ipv4):
    from moltbuild.supply.provenance import BuildFacts

    fake = LoopingBlobs(httpserver_ipv4)
    digest, _ = fake.add_image(REPO, "sha-1")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    runner = ScriptedCosign(bindir)
    facts = BuildFacts(
        "api", f"{fake.host}/{REPO}", digest, ("sha-1",), "", COMMIT, False, "main", {}, "Dockerfile",
        None, (), "", {}, "buildah", "", "", "",
    )  # fmt: skip
    with pytest.raises(RegistryError) as caught:
        attester(tmp_path, fake, runner, None).attest(facts)
    assert "\n" not in caught.value.message
    assert caught.value.message.endswith(
        "(a redirect loop); the registry or a proxy in front of it is misconfigured"
    )
    assert runner.calls == []  # syft never started: no minutes of its retries


def facts_of(fake: FakeRegistry, digest: str):
    from moltbuild.supply.provenance import BuildFacts

    return BuildFacts(
        "api", f"{fake.host}/{REPO}", digest, ("sha-1",), "", COMMIT, False, "main", {}, "Dockerfile",
        None, (), "", {}, "buildah", "", "", "",
    )  # fmt: skip


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("same_config", [True, False])
def test_the_sbom_of_the_local_image_is_attached_only_when_the_pushed_image_has_its_config(
    tmp_path, fake, same_config, signed
):
    digest, _ = fake.add_image(REPO, "sha-1")
    config = (
        session(tmp_path, fake.host)
        .registries.client(fake.host)
        .manifest(REPO, digest, method="GET")
        .config_digest()
    )
    assert config.startswith("sha256:") and config != digest
    bindir = tmp_path / "bin"
    bindir.mkdir()
    runner = ScriptedCosign(bindir)
    local = tmp_path / "local-sbom.json"
    local.write_text(json.dumps({"spdxVersion": "SPDX-2.3", "packages": [{}] * 7}))
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "api.sbom.json").write_text(
        json.dumps({"spdxVersion": "SPDX-2.3", "packages": [{}]})
    )
    copy = LocalSbom(config if same_config else "sha256:" + "0" * 64, local, 7)
    chosen = attester(tmp_path, fake, runner, None)
    if not signed:
        chosen.signer = Signer(Mode.UNSIGNED)
    done = chosen.attest(facts_of(fake, digest), lambda: copy)
    scans = [argv for argv, _ in runner.calls if argv[1] == "scan"]
    attests = [argv for argv, _ in runner.calls if argv[1] == "attest"]
    if same_config:
        assert scans == [] and done.scanned == LOCAL_COPY and done.packages == 7
    else:  # another image (rebuilt since): the files it describes are not the pushed ones
        assert [a[2] for a in scans] == [f"registry:{fake.host}/{REPO}@{digest}"]
        assert done.scanned == FROM_REGISTRY and done.packages == 1
    if signed:  # the SBOM's attestation carries the scan that was chosen
        assert (str(local) in attests[-1]) == same_config
    else:
        (sbom,) = [
            a for a in attached.read(chosen.client, REPO, digest) if a.predicate_type != PROVENANCE_TYPE
        ]
        assert len(sbom.statement["predicate"]["packages"]) == done.packages


class KeyedCosign(ScriptedCosign):
    """cosign with a key: `attest --no-upload=true` prints the envelope it signed (here a fake
    signature over the statement cosign would make); any other verb succeeds silently."""

    def run(self, argv, **kwargs):
        if argv[1] == "attest" and "--no-upload=true" in argv:
            self.calls.append((argv, dict(kwargs.get("env") or {})))
            kind = {v: k for k, v in PREDICATE_TYPES.items()}[argv[argv.index("--type") + 1]]
            uri = PROVENANCE_TYPE if kind == "provenance" else SBOM_TYPES[kind]
            predicate = json.loads(Path(argv[argv.index("--predicate") + 1]).read_text())
            statement = {
                "_type": "https://in-toto.io/Statement/v0.1",
                "predicateType": uri,
                "predicate": predicate,
            }
            signed = json.loads(attached.envelope(statement)) | {"signatures": [{"keyid": "", "sig": kind}]}
            return Result(argv, 0, json.dumps(signed) + "\n")
        return super().run(argv, **kwargs)


def test_with_a_key_both_attestations_go_up_in_one_att_write_replacing_their_kinds(tmp_path, fake):
    digest, _ = fake.add_image(REPO, "sha-1")
    other = statement(f"{fake.host}/{REPO}", digest, "https://example.org/vuln-scan/v1", {"ok": True})
    old = statement(f"{fake.host}/{REPO}", digest, PROVENANCE_TYPE, {"old": True})
    client = session(tmp_path, fake.host).registries.client(fake.host)
    attached.write(client, REPO, digest, [(attached.envelope(old), PROVENANCE_TYPE)], replace_signed=True)
    attached.write(
        client, REPO, digest, [(attached.envelope(other), other["predicateType"])], replace_signed=True
    )
    bindir = tmp_path / "bin"
    bindir.mkdir()
    runner = KeyedCosign(bindir)
    local = tmp_path / "local-sbom.json"
    local.write_text(json.dumps({"spdxVersion": "SPDX-2.3", "packages": [{}] * 3}))
    keyed = attester(tmp_path, fake, runner, None)
    keyed.signer = Signer(Mode.KEY, key=str(tmp_path / "cosign.key"))
    config = client.manifest(REPO, digest, method="GET").config_digest()
    done = keyed.attest(facts_of(fake, digest), lambda: LocalSbom(config, local, 3))
    assert done.signature.endswith(".sig") and done.packages == 3
    verbs = [argv[1:2] + [a for a in argv if a.startswith("--no-upload")] for argv, _ in runner.calls]
    assert sorted(verbs) == [["attest", "--no-upload=true"]] * 2 + [["sign"]]  # cosign uploads no .att
    found = {a.predicate_type: a for a in attached.read(client, REPO, digest)}
    assert set(found) == {PROVENANCE_TYPE, SBOM_TYPES["spdx-json"], other["predicateType"]}  # old replaced
    assert found[PROVENANCE_TYPE].signed and found[PROVENANCE_TYPE].statement["predicate"]["buildDefinition"]
    assert found[SBOM_TYPES["spdx-json"]].statement["predicate"]["packages"] == [{}] * 3
