"""The push path against a registry over real HTTP (the in-memory distribution registry of
test_registry_client): the local builders' shared push (upload once, tags by manifest PUT,
confirmed), `registry/tags`, and `invoke verify`. A fake builder stands in for buildah/docker at
the hooks `LocalBackend` asks them for; no process is started."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from pytest_httpserver import HTTPServer

from moltbuild import report
from moltbuild.backends.contract import BackendStatus, JobLog, PushTarget, RunSpec
from moltbuild.backends.local import LocalBackend
from moltbuild.errors import CommandError, ConfigError, JobError, RegistryError
from moltbuild.flows import verify as verify_flow
from moltbuild.flows.context import Session
from moltbuild.plan.planner import ImagePlan
from moltbuild.refs import ImageRef
from moltbuild.registry.auth import Registries
from moltbuild.registry.tags import echo_puts, put_and_confirm, resolve
from moltbuild.settings import load_settings
from moltbuild.system.processes import Runner
from tests.unit.records import image_record, pushed_entry
from tests.unit.test_registry_client import FakeRegistry
from tests.unit.verdicts import storage_verdict

REPO = "ns/moltbook-api"


@pytest.fixture()
def fake(httpserver_ipv4: HTTPServer) -> Iterator[FakeRegistry]:
    yield FakeRegistry(httpserver_ipv4)
    httpserver_ipv4.check()


def settings_for(tmp_path: Path, host: str, **environ: str):
    env = {"MOLTBUILD_INSECURE_REGISTRIES": host, **environ}
    return load_settings(tmp_path, environ=env, tool_config={"registry": f"{host}/ns"})


class FakeBuilder(LocalBackend):
    """Builds nothing; its upload puts a small image into the fake registry under the first tag
    (or fails the way a push tool does)."""

    name = "fake"
    binary = "true"

    def __init__(self, *args, registry: FakeRegistry, fail_push: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.fake, self.fail_push, self.lines = registry, fail_push, []
        self.store_runtime = FakeRuntime({})
        self.fail_build = ""

    def status(self) -> BackendStatus:
        return BackendStatus(self.name, True, True, "fake")

    def write_config(self, run: RunSpec) -> None:
        (run.workdir / "config").write_text("{}")

    def login(self, host, creds) -> None:
        self.lines.append(f"login {host}")

    def pull_base(self, base: str, source: str) -> None:
        self.lines.append(f"pull {source}")

    def build(self, image: ImagePlan, *, no_cache: bool, log: JobLog) -> str:
        self.lines.append(f"build {image.name}")
        if self.fail_build:
            raise CommandError(["fake", "build"], 1, self.fail_build)
        return ""

    def built_id(self, image: ImagePlan) -> str | None:
        return "sha256:" + "e" * 64

    def runtime(self):
        return self.store_runtime

    def state_dir(self) -> Path:
        return Path(self._file("state"))

    def push_once(self, target: PushTarget, tag: str, log: JobLog) -> str:
        if self.fail_push:
            raise CommandError(["fake", "push"], 125, self.fail_push)
        if self.dry_run:
            return ""
        digest, _ = self.fake.add_image(target.ref.repository, tag)
        return digest


class FakeRuntime:
    """The local store's container tool: lists `images` (id -> names), removes what it is told."""

    def __init__(self, images: dict[str, list[str]], tool: str = "no-such-runtime"):
        self.argv, self.images, self.calls = [tool], images, []

    def __call__(self, *args, **kwargs):
        self.calls.append(args)
        if args[:2] == ("images", "--all"):
            out = "\n".join(self.images)
        elif args[:2] == ("image", "inspect"):
            out = json.dumps([{"Id": i, "Parent": "", "RepoTags": n} for i, n in self.images.items()])
        else:
            out = ""
        return SimpleNamespace(stdout=out, ok=True)

    def has_image(self, image: str) -> bool:
        return True

    def reap_smoke(self) -> list[str]:
        return []


def plan(host: str, *tags: str) -> ImagePlan:
    return ImagePlan(
        name="api",
        ref=ImageRef.parse(f"{host}/{REPO}", "test"),
        tags=tags or ("sha-abc1234", "main", "rc1"),
        context=Path("/ctx"),
        dockerfile=Path("/ctx/Dockerfile"),
        build_args={},
        labels={},
        target=None,
        platforms=(),
        input_digest="sha256:" + "1" * 64,
        bases=(),
    )


def builder(tmp_path: Path, fake: FakeRegistry, *, dry_run=False, fail_push="", out=None) -> FakeBuilder:
    settings = settings_for(tmp_path, fake.host)
    runner = Runner(out=out or (lambda _: None), dry_run=dry_run, environ={})
    backend = FakeBuilder(
        runner, settings, storage_verdict(), dry_run=dry_run, registry=fake, fail_push=fail_push
    )
    workdir = tmp_path / "run"
    workdir.mkdir(parents=True)
    backend.workdir = workdir
    backend._registries = Registries(settings)  # what open() takes from the run context
    return backend


def test_a_build_with_push_uploads_once_and_puts_every_other_tag(tmp_path, fake):
    backend = builder(tmp_path, fake)
    result = backend.produce(plan(fake.host), push=True, no_cache=False, log=JobLog("[api] "))
    served = {tag: fake.manifests.get((REPO, tag)) for tag in ("sha-abc1234", "main", "rc1")}
    assert all(served.values()) and len({body for _, body in served.values()}) == 1
    assert result.digest and result.tags_pushed == ("sha-abc1234", "main", "rc1")
    assert result.image_id == "sha256:" + "e" * 64 and result.size_bytes and result.size_bytes > 0
    assert result.smoke == "skipped: --no-smoke"
    puts = [path for method, path in fake.requests() if method == "PUT"]
    assert puts == [f"/v2/{REPO}/manifests/main", f"/v2/{REPO}/manifests/rc1"]  # no second upload


def test_a_failed_push_keeps_the_built_image_for_invoke_push(tmp_path, fake):
    backend = builder(tmp_path, fake, fail_push="Error: writing blob: HTTP 500 Internal Server Error")
    with pytest.raises(JobError, match="HTTP 500") as err:
        backend.produce(plan(fake.host), push=True, no_cache=False, log=JobLog("[api] "))
    assert err.value.image_id == "sha256:" + "e" * 64
    assert not [r for r in fake.requests() if r[0] == "PUT"]


def test_a_build_without_push_touches_no_registry(tmp_path, fake):
    backend = builder(tmp_path, fake)
    result = backend.produce(plan(fake.host), push=False, no_cache=False, log=JobLog("[api] "))
    assert result.digest is None and not result.pushed and result.image_id == "sha256:" + "e" * 64
    assert fake.requests() == []


def test_a_dry_run_echoes_each_tag_put_and_contacts_no_registry(tmp_path, fake):
    lines: list[str] = []
    backend = builder(tmp_path, fake, dry_run=True, out=lines.append)
    backend.produce(plan(fake.host), push=True, no_cache=False, log=JobLog("[api] "))
    ref = f"{fake.host}/{REPO}"
    assert f"[api] + PUT {ref}:main (the manifest pushed as sha-abc1234)" in lines
    assert f"[api] + PUT {ref}:rc1 (the manifest pushed as sha-abc1234)" in lines
    assert fake.requests() == []


def test_a_push_the_registry_does_not_keep_is_named(tmp_path, fake):
    backend = builder(tmp_path, fake)
    ref = ImageRef.parse(f"{fake.host}/{REPO}", "test")
    missing = "sha256:" + "9" * 64
    with pytest.raises(RegistryError, match=rf"{REPO}:sha-1 was pushed, but the registry has no {missing}"):
        backend.tag_remote(ref, "sha-1", missing, ["main"], JobLog("[api] "))


def test_open_logs_in_and_pulls_each_base_once_then_close_releases(tmp_path, fake):
    from moltbuild.backends.contract import BasePull
    from moltbuild.registry.auth import Credentials
    from moltbuild.settings import Secret

    backend = builder(tmp_path, fake, dry_run=True)
    creds = Credentials("u", Secret("p"), ("REGISTRY_USERNAME",))
    bases = {"python:3.12-slim": BasePull("mirror/library/python:3.12-slim", ("api",))}
    clients = Registries(settings_for(tmp_path, fake.host))
    backend.open(RunSpec(tmp_path / "run", logins={fake.host: creds}, bases=bases, registries=clients))
    assert backend.lines == [f"login {fake.host}", "pull mirror/library/python:3.12-slim"]
    backend.tidy(ok=True, built=[plan(fake.host)])  # a dry run records nothing
    backend.close()


@pytest.mark.parametrize(
    "tail, mirror, hint",
    [
        (
            "server gave HTTP response to HTTPS client",
            None,
            "speaks plain HTTP: add it to MOLTBUILD_INSECURE",
        ),
        ("x509: certificate signed by unknown authority", None, "set MOLTBUILD_REGISTRY_CA"),
        ("manifest unknown", "mirror.example/hub", "check that mirror.example/hub/library/python"),
        ("manifest unknown", None, "set MOLTBUILD_BASE_MIRROR"),
    ],
)
def test_a_base_that_cannot_be_pulled_stops_the_run_with_the_fix(tmp_path, fake, tail, mirror, hint):
    from moltbuild.backends.contract import BasePull

    backend = builder(tmp_path, fake, dry_run=True)

    def pull_base(base, source):
        raise CommandError(["fake", "pull", source], 125, f"Error: {tail}")

    backend.pull_base = pull_base
    source = f"{mirror}/library/python:3.12-slim" if mirror else "python:3.12-slim"
    bases = {"python:3.12-slim": BasePull(source, ("api",))}
    with pytest.raises(JobError, match=r"cannot pull base image python:3\.12-slim") as err:
        backend.open(
            RunSpec(
                tmp_path / "run",
                mirror=mirror,
                bases=bases,
                registries=Registries(settings_for(tmp_path, fake.host)),
            )
        )
    assert hint in err.value.message and tail in err.value.message


def test_a_failed_build_says_so_and_names_a_full_store(tmp_path, fake):
    backend = builder(tmp_path, fake)
    backend.fail_build = "Error: committing container: no space left on device"
    with pytest.raises(JobError, match="no space left on device") as err:
        backend.produce(plan(fake.host), push=True, no_cache=False, log=JobLog("[api] "))
    assert "is full" in err.value.message and err.value.image_id is None


def test_the_smoke_check_is_skipped_without_a_runtime_and_echoed_in_a_dry_run(tmp_path, fake):
    from dataclasses import replace

    from moltbuild.smoke.probes import SmokePlan

    image = replace(plan(fake.host), smoke=SmokePlan())
    lines: list[str] = []
    real = builder(tmp_path, fake, out=lines.append)
    assert real.smoke(image, "sha256:" + "e" * 64, JobLog("[api] ")) == (
        "skipped: no-such-runtime is not installed (invoke setup)"
    )
    dry = builder(tmp_path / "dry", fake, dry_run=True, out=lines.append)
    assert dry.smoke(image, "sha256:" + "e" * 64, JobLog("[api] ")) == ""
    assert "[api] + smoke check: run api, wait for its HEALTHCHECK, GET its probe paths" in lines


def test_a_real_run_holds_the_store_records_what_it_built_and_prunes_what_it_superseded(tmp_path, fake):
    old, new = "a" * 64, "e" * 64
    lines: list[str] = []
    backend = builder(tmp_path, fake, out=lines.append)
    backend.state_dir = lambda: tmp_path / "state"
    name = f"{fake.host}/{REPO}"
    backend.store_runtime = FakeRuntime({old: [f"{name}:sha-0ld0000"], new: [f"{name}:main", f"{name}:rc1"]})
    report_path = tmp_path / "build" / "images.json"
    backend.open(
        RunSpec(
            tmp_path / "run", report=report_path, registries=Registries(settings_for(tmp_path, fake.host))
        )
    )
    assert (tmp_path / "state" / "run.lock").exists()
    backend.produce(plan(fake.host), push=False, no_cache=False, log=JobLog("[api] "))
    backend.store().record(backend.store().inventory(), [old])  # an earlier build of this checkout
    backend.tidy(ok=True, built=[plan(fake.host)])
    assert ("rmi", old) in backend.store_runtime.calls and backend.store().ledger() == {new}
    assert "storage: removed 1 image(s) this tool created and nothing uses any more" in "\n".join(lines)
    backend.tidy(ok=True, built=[plan(fake.host)])  # nothing new: the ledger already has it
    backend.close()
    assert not list((tmp_path / "state").glob("runs/*.json"))  # the run's marker is gone


# -- registry/tags: PUT each tag, read each back -----------------------------------------------


def test_put_and_confirm_points_each_tag_at_the_digest(tmp_path, fake):
    digest, _ = fake.add_image(REPO, "sha-1")
    client = Registries(settings_for(tmp_path, fake.host)).client(fake.host)
    ref = ImageRef.parse(f"{fake.host}/{REPO}", "test")
    put_and_confirm(client, ref, ["main", "v1"], digest=digest)
    assert all(fake.manifests[(REPO, t)] == fake.manifests[(REPO, "sha-1")] for t in ("main", "v1"))
    put_and_confirm(client, ref, [], digest=digest)  # nothing to do: no request
    found = resolve(client, ImageRef.parse(f"{fake.host}/{REPO}:v1", "test"))
    assert found.digest == digest


def test_a_tag_that_serves_something_else_fails_naming_it(tmp_path, fake):
    fake.add_image(REPO, "sha-1")
    other, _ = fake.add_image(REPO, "other", arch="arm64")
    client = Registries(settings_for(tmp_path, fake.host)).client(fake.host)
    ref = ImageRef.parse(f"{fake.host}/{REPO}", "test")
    wanted = "sha256:" + "7" * 64
    with pytest.raises(
        RegistryError, match=rf"{REPO}:main serves {other} after the tag was set, not {wanted}"
    ):
        put_and_confirm(
            client, ref, ["main"], digest=wanted, manifest=client.manifest(REPO, other, method="GET")
        )
    with pytest.raises(RegistryError, match=rf"{REPO}:nope not found in {fake.host}; nothing to tag"):
        resolve(client, ImageRef.parse(f"{fake.host}/{REPO}:nope", "test"))


def test_echo_puts_is_the_one_dry_run_line():
    lines: list[str] = []
    refs = [ImageRef.parse("reg.example/ns/api:main", "test")]
    echo_puts(lines.append, refs, "the manifest at sha256:abc", prefix="[api] ")
    assert lines == ["[api] + PUT reg.example/ns/api:main (the manifest at sha256:abc)"]


# -- invoke verify: the report's images, in the registry, and their attestations ----------------


def verify_session(tmp_path: Path, host: str, **environ: str) -> Session:
    s = Session(
        settings=settings_for(tmp_path, host, **environ),
        runner=Runner(out=lambda _: None, environ={}),
        environ={},
    )
    s.storage = storage_verdict()
    return s


def write_report(path: Path, host: str, digest: str) -> None:
    entry = pushed_entry("api", repository=f"{host}/{REPO}", digest=digest, tags=["sha-1"])
    path.write_text(json.dumps(report.document([image_record(entry)])))


def test_verify_finds_the_pushed_image_and_says_it_is_not_attested(tmp_path, fake):
    digest, _ = fake.add_image(REPO, "sha-1")
    path = tmp_path / "images.json"
    write_report(path, fake.host, digest)
    (check,) = verify_flow.verify(verify_session(tmp_path, fake.host), report_path=path)
    assert (check.verdict, check.actual) == ("unattested", digest) and check.reason
    (plain,) = verify_flow.verify(verify_session(tmp_path, fake.host), report_path=path, attestations=False)
    assert plain.verdict == "ok"
    off = verify_session(tmp_path, fake.host, MOLTBUILD_ATTEST="off")
    assert [c.verdict for c in verify_flow.verify(off, report_path=path)] == ["ok"]


def test_verify_reports_a_missing_image_without_asking_for_attestations(tmp_path, fake):
    fake.add_image(REPO, "other")
    path = tmp_path / "images.json"
    write_report(path, fake.host, "sha256:" + "3" * 64)
    (check,) = verify_flow.verify(verify_session(tmp_path, fake.host), report_path=path)
    assert check.verdict in ("missing", "mismatch") and not [
        p for _, p in fake.requests() if ".att" in p or "sha256-" in p
    ]


def test_verify_with_a_key_but_no_cosign_says_how_to_install_it(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no cosign on it
    key = tmp_path / "cosign.pub"
    key.write_text("-----BEGIN PUBLIC KEY-----\n")
    digest, _ = fake.add_image(REPO, "sha-1")
    write_report(tmp_path / "images.json", fake.host, digest)
    s = verify_session(tmp_path, fake.host, MOLTBUILD_VERIFY_KEY=str(key))
    with pytest.raises(ConfigError, match="MOLTBUILD_VERIFY_KEY/IDENTITY is set but cosign is not installed"):
        verify_flow.verify(s, report_path=tmp_path / "images.json")
