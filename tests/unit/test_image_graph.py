"""The image graph: an image FROM another image of the project builds after it, from a copy of
its Dockerfile pinned to the base by digest; its input digest folds in its base's; `changed`
propagates; --only takes what an image needs unless --no-deps; a cycle is one line; a failed base
fails its dependents without starting them."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from moltbuild import report
from moltbuild.backends.contract import ImageResult, JobLog
from moltbuild.backends.selection import BACKENDS
from moltbuild.dockerfile import parse
from moltbuild.errors import ConfigError, JobError
from moltbuild.flows import build, schedule, summary
from moltbuild.flows import facts as gather
from moltbuild.flows.context import Session
from moltbuild.flows.records import to_record
from moltbuild.plan import graph
from moltbuild.plan.changes import Change, changed_images, propagate
from moltbuild.plan.facts import ChangeFacts
from moltbuild.plan.planner import ImagePlan, PlanInputs, make_plan
from moltbuild.plan.request import BuildRequest
from moltbuild.refs import ImageRef
from moltbuild.system import state
from tests.unit.test_orchestration import RecordingBackend, image, plan, session

REG = "127.0.0.1:5000/ns"
# base <- svc-a, svc-b; svc-a <- deep (two levels)
DOCKERFILES = {
    "base": "FROM busybox:1.36\nRUN echo base\n",
    "svc-a": "ARG REG=127.0.0.1:5000/ns\nFROM ${REG}/base:latest\nRUN echo a\n",
    "svc-b": "FROM 127.0.0.1:5000/ns/base AS built\nRUN echo b\nFROM built\n",
    "deep": "FROM --platform=linux/amd64 127.0.0.1:5000/ns/svc-a:main\nRUN echo deep\n",
    "solo": "FROM busybox:1.36\n",
}


def write_project(root: Path, dockerfiles: dict[str, str] = DOCKERFILES) -> Path:
    tables = ""
    for name, text in dockerfiles.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "Dockerfile").write_text(text)
        (root / name / "file.txt").write_text(name)
        tables += f'[tool.moltbuild.images.{name}]\nrepository = "{name}"\ncontext = "{name}"\n'
    (root / "pyproject.toml").write_text(f'[tool.moltbuild]\nregistry = "{REG}"\n{tables}')
    env = {"PATH": os.environ["PATH"]}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "first"]):
        ident = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]
        subprocess.run(["git", "-C", str(root), *ident, *args], check=True, env=env)
    return root


@pytest.fixture()
def repo(tmp_path):
    state.begin_command()
    return write_project(tmp_path / "repo")


def a_session(root: Path) -> Session:
    return Session.create(environ={"PATH": os.environ["PATH"]}, project_root=root)


def a_plan(root: Path, request: BuildRequest):
    s = a_session(root)
    return make_plan(request, PlanInputs(s.settings, gather.plan_facts(s, request), "recording", "test"))


def test_order_puts_bases_first_and_a_cycle_is_one_line_naming_it():
    assert graph.order({"deep": ["a"], "a": ["base"], "base": [], "b": ["base", "elsewhere"]}) == [
        "base",
        "a",
        "deep",
        "b",
    ]
    with pytest.raises(ConfigError) as exc:
        graph.order({"x": ["y"], "y": ["z"], "z": ["x"]})
    assert exc.value.message.startswith("image graph has a cycle: x -> y -> z -> x")
    assert "\n" not in exc.value.message


def test_project_bases_after_arg_substitution_any_tag_no_stage_names():
    repos = {n: ImageRef.parse(f"{REG}/{n}", "t") for n in DOCKERFILES}

    def uses(name: str):
        return graph.project_bases(parse(DOCKERFILES[name], Path(name), {}), repos, name)

    assert [(u.image, u.named, u.lines) for u in uses("svc-a")] == [("base", f"{REG}/base:latest", (2,))]
    assert [(u.image, u.lines) for u in uses("svc-b")] == [("base", (1,))]  # `FROM built` is a stage
    assert [u.image for u in uses("deep")] == ["svc-a"] and uses("solo") == ()


def test_pinned_dockerfile_rewrites_only_the_image_of_those_from_lines():
    text = DOCKERFILES["deep"] + "FROM 127.0.0.1:5000/ns/svc-a:main AS again\n"
    pinned = graph.pinned_dockerfile(text, {1: "R/svc-a@sha256:" + "1" * 64, 3: "R/svc-a@x"})
    assert pinned.splitlines() == [
        "FROM --platform=linux/amd64 R/svc-a@sha256:" + "1" * 64,
        "RUN echo deep",
        "FROM R/svc-a@x AS again",
    ]


def test_plan_orders_bases_first_and_a_dependents_digest_folds_in_its_base(repo):
    p = a_plan(repo, BuildRequest())
    names = [i.name for i in p.images]
    assert names.index("base") < names.index("svc-a") < names.index("deep") and "solo" in names
    by = {i.name: i for i in p.images}
    assert [link.image for link in by["deep"].needs] == ["svc-a"] and by["solo"].needs == ()
    assert f"{REG}/base:latest" not in p.pulls and "busybox:1.36" in p.pulls  # never pulled: built here
    # the base's inputs change: the base and every image FROM it, transitively, get a new digest
    (repo / "base" / "file.txt").write_text("changed")
    state.begin_command()
    after = {i.name: i.input_digest for i in a_plan(repo, BuildRequest()).images}
    assert {n for n in after if after[n] != by[n].input_digest} == {"base", "svc-a", "svc-b", "deep"}
    assert "graph:    base -> svc-a, svc-b; svc-a -> deep" in build.render_plan(p)


def test_only_takes_what_an_image_needs_unless_no_deps(repo):
    assert [i.name for i in a_plan(repo, BuildRequest(only=("deep",))).images] == ["base", "svc-a", "deep"]
    alone = a_plan(repo, BuildRequest(only=("deep",), no_deps=True))
    assert [i.name for i in alone.images] == ["deep"]
    (link,) = alone.images[0].needs
    assert link.unbuilt.startswith(f"{REG}/svc-a:input-")  # the base as pushed with these inputs
    assert "not built in this run (--no-deps)" in build.render_plan(alone)
    same = a_plan(repo, BuildRequest(only=("deep",))).images[-1]
    assert alone.images[0].input_digest == same.input_digest  # the base's inputs count either way


def test_a_cycle_is_refused_before_anything_is_planned(tmp_path):
    state.begin_command()
    root = write_project(
        tmp_path / "r", {"x": f"FROM {REG}/y\n", "y": f"FROM {REG}/x:1\n", "z": "FROM busybox\n"}
    )
    with pytest.raises(ConfigError, match=r"^image graph has a cycle: (x -> y -> x|y -> x -> y) "):
        a_plan(root, BuildRequest(only=("z", "x")))


def test_changed_propagates_to_every_dependent_naming_the_base(repo):
    s = a_session(repo)
    facts = ChangeFacts("main", "b" * 40, ("base/file.txt",))
    _, changes = changed_images(repo, s.images, facts, gather.image_needs(s))
    why = {c.image: c.reason for c in changes if c.changed}
    assert why == {
        "base": "base/file.txt changed",
        "svc-a": "its base base changed",
        "svc-b": "its base base changed",
        "deep": "its base svc-a changed",
    }
    only_a = propagate(
        [Change("svc-a", True, "x"), Change("deep", False, "-"), Change("base", False, "-")],
        {"deep": ["svc-a"], "svc-a": ["base"]},
    )
    assert [c.changed for c in only_a] == [True, True, False]


def _graph_images(tmp_path: Path) -> list[ImagePlan]:
    plans = []
    for name, text in DOCKERFILES.items():
        (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / name / "Dockerfile").write_text(text)
        ref = ImageRef.parse(f"{REG}/{name}", "test")
        plans.append(replace(image(name), ref=ref, dockerfile=tmp_path / name / "Dockerfile"))
    by = {i.name: i for i in plans}
    repos = {n: i.ref for n, i in by.items()}

    for name in list(by):
        uses = graph.project_bases(parse(DOCKERFILES[name], Path(name), {}), repos, name)
        links = tuple(graph.BaseLink(u, by[u.image].ref, by[u.image].input_digest, "U") for u in uses)
        by[name] = replace(by[name], needs=links)
    return [by[n] for n in ("base", "svc-a", "svc-b", "deep", "solo")]


class OrderedBackend(RecordingBackend):
    """Records when each job starts and ends and the Dockerfile it was given."""

    events: list[tuple[str, str, str]] = []
    lock = threading.Lock()

    def produce(self, image: ImagePlan, *, push: bool, no_cache: bool, log: JobLog, built=None):
        with self.lock:
            self.events.append(("start", image.name, image.dockerfile.read_text()))
        time.sleep(0.05)
        try:
            return super().produce(image, push=push, no_cache=no_cache, log=log)
        finally:
            with self.lock:
                self.events.append(("end", image.name, ""))


def test_build_follows_the_graph_pins_each_base_and_a_failed_base_starts_no_dependent(tmp_path, monkeypatch):
    monkeypatch.setitem(BACKENDS, "recording", OrderedBackend)
    OrderedBackend.events, OrderedBackend.fail = [], {}
    images = _graph_images(tmp_path)
    p = replace(plan(*images), jobs=4)
    records = build.execute(session(tmp_path), p, dry_run=False, report_path=tmp_path / "b" / "images.json")
    ev = OrderedBackend.events
    at = {(kind, name): i for i, (kind, name, _) in enumerate(ev)}
    assert at["end", "base"] < at["start", "svc-a"] and at["end", "svc-a"] < at["start", "deep"]
    assert at["start", "solo"] < at["end", "base"]  # independent images do not wait for a level
    deep_file = next(text for kind, name, text in ev if (kind, name) == ("start", "deep"))
    assert deep_file.startswith("FROM --platform=linux/amd64 127.0.0.1:5000/ns/svc-a:input-")
    by = {r.name: r for r in records}
    assert by["deep"].base_image == "127.0.0.1:5000/ns/svc-a" and by["deep"].base_digest == "id-svc-a"
    assert by["solo"].base_image == "" and "base_image" not in by["solo"].to_dict()
    shown = summary.render(records, None, None)
    assert "deep: built FROM 127.0.0.1:5000/ns/svc-a (id-svc-a)" in shown and "solo: built" not in shown

    OrderedBackend.events = []
    OrderedBackend.fail = {"svc-a": JobError("boom")}
    with pytest.raises(report.RunFailed) as exc:
        build.execute(session(tmp_path), p, dry_run=False, report_path=tmp_path / "c" / "images.json")
    started = {name for kind, name, _ in OrderedBackend.events if kind == "start"}
    assert started == {"base", "svc-a", "svc-b", "solo"}  # deep never started
    by = {r.name: r for r in exc.value.records}
    assert by["deep"].outcome is report.Outcome.FAILED and by["deep"].error == "not built: base svc-a failed"
    assert report.read(tmp_path / "c" / "images.json") == exc.value.records


def test_a_base_without_a_usable_pin_stops_its_dependents(tmp_path):
    img = _graph_images(tmp_path)
    todo = schedule.Schedule(plan(*img[:2]), list(img[:2]), {}, tmp_path, local=False)
    assert [i.name for i in todo.ready()] == ["base"]
    rec = to_record(todo.plan, img[0], ImageResult("id", (), 0.1))  # built, not pushed
    assert todo.done(img[0], rec) == [
        (img[1], "not built: base base was not pushed (a backend without a local store needs --push)")
    ]


class StorelessBackend(RecordingBackend):
    keeps_images = False  # like Kaniko: a base reaches its dependents only through the registry


def test_a_backend_without_a_store_refuses_a_graph_without_push_before_any_job(tmp_path, monkeypatch):
    monkeypatch.setitem(BACKENDS, "recording", StorelessBackend)
    StorelessBackend.instances.clear()
    p = plan(*_graph_images(tmp_path)[:2])
    with pytest.raises(ConfigError, match=r"^svc-a is built FROM base of this project, .* add --push"):
        build.execute(session(tmp_path), p, dry_run=False, report_path=tmp_path / "r" / "images.json")
    assert [c[0] for c in StorelessBackend.instances[0].calls] == ["open"]  # no job started
