"""build.execute and publish drive any backend through the contract alone: a recording backend
of our own contract stands in here (no process is started)."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from moltbuild import report
from moltbuild.backends.contract import (
    Backend,
    BackendStatus,
    BasePull,
    ImageResult,
    JobLog,
    PushTarget,
    RunSpec,
)
from moltbuild.backends.selection import BACKENDS, backend_class
from moltbuild.errors import BuildError, ConfigError, JobError, MoltbuildError
from moltbuild.flows import build, publish
from moltbuild.flows.context import Session
from moltbuild.flows.records import to_record
from moltbuild.plan.planner import BuildPlan, ImagePlan, cache_tag
from moltbuild.plan.request import BuildRequest
from moltbuild.plan.tags import GitState
from moltbuild.refs import ImageRef
from moltbuild.settings import load_settings
from moltbuild.system.processes import Result, Runner
from tests.unit.verdicts import storage_verdict

DIGEST = "sha256:" + "d" * 64


class RecordingBackend(Backend):
    name = "recording"
    keeps_images = True  # pushes what it built, like buildah and docker
    binary = "true"
    instances: list[RecordingBackend] = []
    fail: dict[str, JobError] = {}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[tuple] = []
        RecordingBackend.instances.append(self)

    def status(self) -> BackendStatus:
        return BackendStatus(self.name, True, True, "records calls")

    def runtime(self):
        """Every recorded image is still in its (imagined) local store."""
        return SimpleNamespace(argv=["true"], has_image=lambda image: True)

    def open(self, run: RunSpec) -> None:
        assert run.workdir.is_dir() and (run.workdir.stat().st_mode & 0o777) == 0o700
        self.calls.append(("open", dict(run.logins), dict(run.bases)))

    def produce(self, image: ImagePlan, *, push: bool, no_cache: bool, log: JobLog, built=None):
        self.calls.append(("produce", image.name, push, log.prefix))
        if image.name in self.fail:
            time.sleep(0.05)  # a failure takes time too: the record must say how much
            raise self.fail[image.name]
        pushed = image.tags if push and not self.dry_run else ()
        return ImageResult(
            "id-" + image.name, ("linux/amd64",), 0.5, log.path, DIGEST if pushed else None, pushed
        )

    def push_built(self, target: PushTarget, *, log: JobLog) -> ImageResult:
        self.calls.append(("push_built", target))
        if target.name in self.fail:
            raise self.fail[target.name]
        return ImageResult(target.source, ("linux/amd64",), 0.1, None, DIGEST, target.tags)


@pytest.fixture()
def recording(monkeypatch):
    monkeypatch.setitem(BACKENDS, "recording", RecordingBackend)
    RecordingBackend.instances.clear()
    RecordingBackend.fail = {}
    yield RecordingBackend


def image(name: str, bases=("python:3.12-slim",), registry: str = "127.0.0.1:5000") -> ImagePlan:
    digest = "sha256:" + name[0] * 64 if name[0] in "abcdef" else "sha256:" + "f" * 64
    return ImagePlan(
        name=name,
        ref=ImageRef.parse(f"{registry}/ns/moltbook-{name}", "test"),
        tags=("sha-abc1234", "main", cache_tag(digest)),
        context=Path("/ctx"),
        dockerfile=Path("/ctx/Dockerfile"),
        build_args={},
        labels={},
        target=None,
        platforms=(),
        input_digest=digest,
        bases=tuple(bases),
    )


def plan(*images: ImagePlan, push=False, rebuild=True, registry: str = "127.0.0.1:5000") -> BuildPlan:
    return BuildPlan(
        images=images,
        backend="recording",
        backend_reason="test",
        push=push,
        registry=ImageRef.parse(f"{registry}/ns", "test"),
        git=GitState("a" * 40, "main", "main", False, "https://example.org/r"),
        mirror=None,
        rebuild=rebuild,
        pulls={"python:3.12-slim": "docker.io/library/python:3.12-slim", "busybox:1.36": "x/busybox"},
    )


def session(
    tmp_path: Path, runner: Runner | None = None, *, registry: str = "127.0.0.1:5000", environ=None
) -> Session:
    config = {"MOLTBUILD_INSECURE_REGISTRIES": registry, "MOLTBUILD_ATTEST": "off"}
    settings = load_settings(tmp_path, environ=config, tool_config={"registry": f"{registry}/ns"})
    s = Session(
        settings=settings, runner=runner or Runner(out=lambda _: None, environ={}), environ=environ or {}
    )
    s.storage = storage_verdict()
    return s


@pytest.fixture()
def registry(httpserver_ipv4) -> str:
    """A registry on a free port that lets a pushing run start (its GET /v2/ answers 200)."""
    httpserver_ipv4.expect_request("/v2/").respond_with_json({})
    return f"127.0.0.1:{httpserver_ipv4.port}"


def test_every_backend_method_is_abstract_or_shared_and_all_backends_implement_it():
    assert Backend.__abstractmethods__ == {"status", "open", "produce"}
    local_only = ("push_built", "runtime", "store", "prepare")
    for cls in map(backend_class, BACKENDS):
        assert not cls.__abstractmethods__, cls
        assert "NotImplementedError" not in inspect.getsource(inspect.getmodule(cls))
        # a capability is a promise: a backend that keeps images implements what that needs
        overridden = {m for m in local_only if getattr(cls, m) is not getattr(Backend, m)}
        assert overridden == (set(local_only) if cls.keeps_images else set()), cls
    assert {n for n in BACKENDS if backend_class(n).keeps_images} == {"buildah", "docker"}


def test_kaniko_refuses_what_it_cannot_do_with_a_moltbuild_error(tmp_path):
    kaniko = backend_class("kaniko")(
        Runner(environ=os.environ), session(tmp_path).settings, storage_verdict()
    )
    with pytest.raises(MoltbuildError, match=r"used before open\(\)"):
        kaniko.produce(image("api"), push=True, no_cache=False, log=JobLog("[api] "))
    assert not kaniko.keeps_images
    target = PushTarget("api", image("api").ref, ("t",), "id")
    with pytest.raises(MoltbuildError, match=r"kaniko backend has no local images to push"):
        kaniko.push_built(target, log=JobLog("[api] "))
    with pytest.raises(MoltbuildError, match=r"kaniko backend has no local container runtime"):
        kaniko.runtime()


def test_execute_opens_once_builds_each_image_and_records_it(tmp_path, recording):
    s = session(tmp_path)
    p = plan(image("api"), image("frontend", bases=("busybox:1.36",)))
    path = tmp_path / "build" / "images.json"
    records = build.execute(s, p, dry_run=False, report_path=path)
    (backend,) = recording.instances
    assert backend.calls[0] == (
        "open",
        {},
        {
            "python:3.12-slim": BasePull("docker.io/library/python:3.12-slim", ("api",)),
            "busybox:1.36": BasePull("x/busybox", ("frontend",)),
        },
    )
    assert sorted(c[1] for c in backend.calls[1:]) == ["api", "frontend"]
    assert [r.outcome for r in records] == [report.Outcome.BUILT] * 2
    on_disk = report.read(path)
    assert on_disk == records and on_disk[0].pin_tag == "sha-abc1234" and on_disk[0].image_id == "id-api"
    assert (tmp_path / "build" / "logs" / "api.log").exists()


def test_one_failure_keeps_the_other_and_a_failed_push_stays_pushable(tmp_path, recording, registry):
    recording.fail = {
        "api": JobError("build of api failed: boom"),
        "frontend": JobError("push failed: registry said no", image_id="id-frontend"),
    }
    path = tmp_path / "images.json"
    with pytest.raises(BuildError, match=r"2 image\(s\) failed: api, frontend; api: build of api failed"):
        build.execute(
            session(tmp_path, registry=registry),
            plan(
                image("api", registry=registry),
                image("frontend", registry=registry),
                push=True,
                registry=registry,
            ),
            dry_run=False,
            report_path=path,
        )
    api, frontend = report.read(path)
    assert (api.outcome, api.image_id) == (report.Outcome.FAILED, None)
    for failed in (api, frontend):  # a failed entry keeps its log and its time
        assert failed.log_path == str(path.parent / "logs" / f"{failed.name}.log")
        assert failed.duration_s >= 0.05
    assert (frontend.outcome, frontend.image_id, frontend.error) == (
        report.Outcome.PUSH_FAILED,
        "id-frontend",
        "push failed: registry said no",
    )


def test_after_a_failed_push_every_place_that_shows_the_outcome_says_so(tmp_path, recording, registry):
    recording.fail = {"api": JobError("push of api failed: HTTP 500 from the registry", image_id="id-api")}
    step_summary, outputs, lines = tmp_path / "step-summary.md", tmp_path / "outputs", []
    environ = {"GITHUB_STEP_SUMMARY": str(step_summary), "GITHUB_OUTPUT": str(outputs)}
    s = session(tmp_path, Runner(out=lines.append, environ={}), registry=registry, environ=environ)
    p = plan(
        image("api", registry=registry), image("frontend", registry=registry), push=True, registry=registry
    )
    with pytest.raises(BuildError, match=r"1 image\(s\) failed: api; api: push of api failed"):
        build.run_plan(s, p, BuildRequest(push=True))
    console = "\n".join(lines).splitlines()
    assert "[api] PUSH FAILED in 0." in "\n".join(console) and "[frontend] pushed in 0.5s" in console
    (row,) = [line for line in console if line.startswith("api ")]  # the summary table
    assert "PUSH FAILED: push of api failed: HTTP 500 from the registry" in row and "(local id-api" in row
    entries = {e["name"]: e for e in json.loads((tmp_path / "build" / "images.json").read_text())["images"]}
    assert (entries["api"]["outcome"], entries["api"]["pushed"], entries["api"]["image_id"]) == (
        "push failed",
        False,
        "id-api",
    )
    assert entries["frontend"]["outcome"] == "pushed" and "status" not in entries["api"]
    (api_row,) = [line for line in step_summary.read_text().splitlines() if line.startswith("| api |")]
    assert "| (not pushed) | PUSH FAILED: push of api failed: HTTP 500 from the registry |" in api_row
    github = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    assert github["images"] == "frontend" and github["api-digest"] == ""
    assert json.loads(github["report"]) == json.loads(
        (tmp_path / "build" / "images.json").read_text()
    )  # one writer: the Actions output is the report itself


def test_dry_run_reaches_the_backend_whatever_runner_the_session_has(tmp_path, recording):
    s = session(tmp_path)
    assert s.runner.dry_run is False
    path = tmp_path / "images.json"
    records = build.execute(s, plan(image("api"), push=True), dry_run=True, report_path=path)
    (backend,) = recording.instances
    assert backend.dry_run is True and backend.runner.dry_run is True and s.runner.dry_run is False
    assert not path.exists() and not records[0].pushed
    assert ("produce", "api", True, "[api] ") in backend.calls


def test_publish_pushes_every_planned_tag_of_a_built_image(tmp_path, recording, monkeypatch):
    root = tmp_path / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text('[tool.moltbuild]\nregistry = "127.0.0.1:5000/ns"\n')
    monkeypatch.chdir(root)
    monkeypatch.delenv("MOLTBUILD_REGISTRY", raising=False)
    monkeypatch.setattr(Session, "storage", storage_verdict(), raising=False)
    path = root / "build" / "images.json"
    old = to_record(plan(image("api")), image("api"), ImageResult("id-api", ("linux/amd64",), 1.0))
    report.update(path, old.but(tags=["sha-abc1234", "main"]))  # as versions before the input tag wrote it
    monkeypatch.setattr(publish, "preflight_push", lambda *a, **k: None)
    monkeypatch.setenv("MOLTBUILD_ATTEST", "off")  # the recording backend pushes nothing to scan
    (new,) = publish.push_built(Session.create(), report_path=path)
    (backend,) = recording.instances
    target = backend.calls[1][1]
    assert target.source == "id-api" and target.tags == ("sha-abc1234", "main", cache_tag(old.input_digest))
    assert report.read(path) == [new] and new.outcome is report.Outcome.PUSHED and new.digest == DIGEST
    # tagging an image that is not pushed yet only records the tag for the next push
    recording.instances.clear()
    report.update(path, old)
    (tagged,) = publish.tag_built(Session.create(), ["rc1"], report_path=path)
    assert tagged.tags[-1] == "rc1" and not tagged.pushed and not recording.instances


def test_a_failed_invoke_push_is_recorded_and_shown_as_push_failed(tmp_path, recording, monkeypatch):
    root = tmp_path / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text('[tool.moltbuild]\nregistry = "127.0.0.1:5000/ns"\n')
    monkeypatch.chdir(root)
    monkeypatch.delenv("MOLTBUILD_REGISTRY", raising=False)
    monkeypatch.setattr(Session, "storage", storage_verdict(), raising=False)
    monkeypatch.setattr(publish, "preflight_push", lambda *a, **k: None)
    monkeypatch.setenv("MOLTBUILD_ATTEST", "off")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary.md"))
    path = root / "build" / "images.json"
    for name in ("api", "frontend"):
        built = ImageResult(f"id-{name}", ("linux/amd64",), 1.0)
        report.update(path, to_record(plan(image(name)), image(name), built))
    recording.fail = {"api": MoltbuildError("push of api failed: HTTP 500")}
    lines: list[str] = []
    s = Session.create()
    s = s.with_runner(Runner(out=lines.append, environ=s.environ))
    with pytest.raises(BuildError, match=r"1 image\(s\) failed to push: api: push of api failed: HTTP 500"):
        publish.push_built(s, report_path=path)
    api, frontend = report.read(path)
    assert (api.outcome, api.image_id, frontend.outcome) == (
        report.Outcome.PUSH_FAILED,
        "id-api",
        report.Outcome.PUSHED,
    )
    said = "\n".join(lines)
    assert "[api] PUSH FAILED: api: push of api failed: HTTP 500" in said
    assert [ln for ln in said.splitlines() if ln.startswith("api ") and "PUSH FAILED: api: push of" in ln]
    assert "| PUSH FAILED: api: push of api failed: HTTP 500 |" in (tmp_path / "summary.md").read_text()


def test_publish_refuses_a_report_without_built_images(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text('[tool.moltbuild]\nregistry = "127.0.0.1:5000/ns"\n')
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "images.json"
    failed = to_record(plan(image("api")), image("api"), None, error="boom")
    report.update(path, failed)
    with pytest.raises(ConfigError, match="records no built image"):
        publish.push_built(Session.create(), report_path=path)
    with pytest.raises(ConfigError, match="at least one --tag"):
        publish.tag_built(Session.create(), [], report_path=path)
    assert json.loads(path.read_text())["images"][0]["outcome"] == "failed"


def test_unit_tests_start_no_process(monkeypatch, tmp_path, recording):
    def refuse(*a, **k):
        raise AssertionError("a unit test started a process")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    (rec,) = build.execute(
        session(tmp_path), plan(image("api")), dry_run=False, report_path=tmp_path / "r.json"
    )
    assert rec.outcome is report.Outcome.BUILT and not rec.error  # the whole job ran, no process


class SlowWrongKey(Runner):
    """cosign and syft on PATH (never run); `cosign public-key` fails after a while, as a key its
    password does not open does once scrypt has run."""

    def __init__(self, bindir: Path):
        super().__init__(out=lambda _: None, environ={"PATH": str(bindir)})
        for tool in ("cosign", "syft"):
            (bindir / tool).write_text("")
            (bindir / tool).chmod(0o755)

    def run(self, argv, **kwargs):
        if argv[1:2] == ["public-key"]:
            time.sleep(0.3)
            return Result(argv, 1, "", "Error: reading key: decrypt: encrypted: decryption failed")
        return Result(argv, 0)


def test_a_key_that_does_not_open_stops_the_push_before_any_build_though_it_opens_beside(
    tmp_path, recording, registry
):
    """The key is opened while the backend opens (not before it); its failure still comes before
    the first image is built or pushed."""
    (tmp_path / "bin").mkdir()
    key = tmp_path / "cosign.key"
    key.write_text("k")
    config = {
        "MOLTBUILD_INSECURE_REGISTRIES": registry,
        "MOLTBUILD_ATTEST": "on",
        "MOLTBUILD_SIGNING_KEY": str(key),
        "MOLTBUILD_SIGNING_PASSWORD": "wrong",
    }
    settings = load_settings(tmp_path, environ=config, tool_config={"registry": f"{registry}/ns"})
    s = Session(settings=settings, runner=SlowWrongKey(tmp_path / "bin"), environ={})
    s.storage = storage_verdict()
    with pytest.raises(ConfigError, match="MOLTBUILD_SIGNING_PASSWORD"):
        build.execute(s, plan(image("api", registry=registry), push=True, registry=registry), dry_run=False)
    (backend,) = recording.instances
    assert [c[0] for c in backend.calls] == ["open"]  # opened beside the key check; nothing built
    written = tmp_path / "build" / "images.json"
    assert not written.exists() or report.read(written) == []  # nothing pushed, nothing recorded
