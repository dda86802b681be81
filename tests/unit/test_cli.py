"""The invoke adapters (src/moltbuild/cli) in-process, through invoke's own Program and the
collection the repository's tasks.py composes: listing and help, flag errors, the edge that
turns errors into exit codes, each task's request to its flow, and the "did you mean" hints.

No system tool runs: PATH holds git alone (a dry run still renders buildah and kaniko commands),
the overlay storage probe is replaced by a plain-disk verdict, and any process but git fails."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from invoke import Collection, Program, task
from invoke.parser import Parser

from moltbuild.cli import edge, hints, run_context
from moltbuild.errors import ConfigError, MoltbuildError, RegistryError
from moltbuild.plan.request import BuildRequest
from moltbuild.project import load_images
from moltbuild.registry.verify import Check
from moltbuild.settings import KEYS
from moltbuild.system import state
from tests.unit.verdicts import storage_verdict

ROOT = Path(__file__).resolve().parents[2]
REAL_GIT = shutil.which("git") or "/usr/bin/git"
REAL_POPEN = subprocess.Popen
CANARY = "canary-s3cr3t-7f1d"


def load_tasks() -> Collection:
    spec = importlib.util.spec_from_file_location("moltbuild_root_tasks", ROOT / "tasks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ns


NS = load_tasks()
# invoke pops each flag's help from the task when it builds the parser, so a second Program run
# in the same process would print flags without help: every run starts from this copy.
FLAG_HELP = {name: dict(NS[name].help) for name in NS.task_names}


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.strip().splitlines()


class Calls:
    """Stands in for a flow function: records each call, returns `result`."""

    def __init__(self, result=None):
        self.calls: list[tuple[tuple, dict]] = []
        self.result = result

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.result

    def one(self) -> tuple[tuple, dict]:
        assert len(self.calls) == 1, f"expected one call, got {self.calls}"
        return self.calls[0]


@pytest.fixture(autouse=True)
def only_git_runs(monkeypatch):
    """A unit test here may start git (the project fixture's history), nothing else."""

    def popen(argv, *args, **kwargs):
        tool = Path(argv[0] if isinstance(argv, list | tuple) else str(argv).split()[0]).name
        if tool != "git":
            raise AssertionError(f"a unit test started {argv!r}")
        return REAL_POPEN(argv, *args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", popen)


@pytest.fixture(autouse=True)
def signal_handlers():
    """edge installs SIGTERM/SIGHUP handlers for the command; give the test process its own back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.fixture()
def cli(project, tmp_path, monkeypatch, capsys):
    """Run `invoke ARGS` in the project copy; returns exit code, stdout and stderr."""
    for key in list(os.environ):
        if key.startswith(("MOLTBUILD_", "GITHUB_", "REGISTRY_", "KUBE")) or key in (
            "CI",
            "IMAGE_TAG",
            "DOCKER_CONFIG",
            "REGISTRY_AUTH_FILE",
            "XDG_DATA_HOME",
        ):
            monkeypatch.delenv(key)
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "git").symlink_to(REAL_GIT)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("PATH", str(tools))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(
        "moltbuild.flows.context.probe_storage", lambda path, **kw: storage_verdict(path=str(path))
    )
    monkeypatch.chdir(project)
    capsys.readouterr()

    def run(*args: str, namespace: Collection = NS) -> Result:
        for name, flag_help in FLAG_HELP.items():
            NS[name].help = dict(flag_help)
        try:
            Program(namespace=namespace).run(["invoke", *args])
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    run.project = project
    return run


@pytest.fixture()
def record(monkeypatch):
    """Replace `module.function` (as the adapter imports it) with a recorder."""

    def install(target: str, result=None) -> Calls:
        module, name = target.rsplit(".", 1)
        calls = Calls(result)
        monkeypatch.setattr(importlib.import_module(module), name, calls)
        return calls

    return install


def git(project: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def commit_all(project: Path) -> str:
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "init")
    return git(project, "rev-parse", "--short=7", "HEAD")


def one_line_error(result: Result, code: int) -> str:
    assert result.code == code, result
    assert len(result.err_lines) == 1, result.err
    assert result.err_lines[0].startswith("error: ")
    return result.err_lines[0]


# --- listing and help ------------------------------------------------------------------------


def test_list_shows_every_task_of_every_namespace_with_its_summary(cli):
    result = cli("--list")
    assert result.code == 0
    listed = {}
    for line in result.out.splitlines():
        m = re.match(r"^  (\S+)\s{2,}(\S.*)$", line)
        if m:
            listed[m.group(1)] = m.group(2)
    assert set(listed) == set(NS.task_names)
    assert {name.split(".")[0] for name in listed if "." in name} == {"env", "gh", "k8s", "kaniko"}
    assert {"build", "push", "tag", "verify", "smoke", "doctor", "clean", "changed"} <= set(listed)
    assert all(summary.strip() for summary in listed.values())


@pytest.mark.parametrize("name", sorted(NS.task_names))
def test_help_describes_every_flag(cli, name):
    result = cli("--help", name)
    assert result.code == 0
    options = result.out.split("Options:", 1)[1]
    described = {}
    for line in options.splitlines():
        if line.startswith("  -"):
            m = re.match(r"^  (-.*?)\s{2,}(\S.*)$", line)
            assert m, f"{name}: a flag without help: {line!r}"
            longs = re.findall(r"--(?:\[no-\])?([a-z][\w-]*)", m.group(1))  # --[no-]push too
            described[longs[-1]] = m.group(2)
    target = NS[name]
    flags = {arg.name.replace("_", "-") for arg in target.get_arguments()}
    assert set(described) == flags
    assert all(FLAG_HELP[name].get(flag, "").strip() for flag in flags)
    if not flags:
        assert options.split() == ["none"]


# --- flag errors: one line, exit 2, naming the flag, and no flow reached ------------------------

FLAG_ERRORS = [
    (["build", "--jobs", "abc"], "--jobs", "moltbuild.flows.build.build_images"),
    (["build", "--jobs", "0"], "--jobs", "moltbuild.flows.build.build_images"),
    (["build", "--api-only", "--frontend-only"], "--frontend-only", "moltbuild.flows.build.build_images"),
    (["build", "--backend", "podman"], "--backend", "moltbuild.flows.build.build_images"),
    (["kaniko.build", "--jobs", "two"], "--jobs", "moltbuild.flows.build.build_images"),
    (["pipeline", "--jobs", "-1"], "--jobs", "moltbuild.flows.pipeline.run_pipeline"),
    (["k8s.commit-pins", "--attempts", "0"], "--attempts", "moltbuild.ci.pins.commit_and_push"),
    (["k8s.commit-pins", "--attempts", "abc"], "--attempts", "moltbuild.ci.pins.commit_and_push"),
    (["gh.runs", "--limit", "0"], "--limit", "moltbuild.ci.github.client"),
    (["gh.runs", "--limit", "ten"], "--limit", "moltbuild.ci.github.client"),
]


@pytest.mark.parametrize(("argv", "flag", "flow"), FLAG_ERRORS, ids=[" ".join(a) for a, _, _ in FLAG_ERRORS])
def test_a_bad_flag_is_one_line_exit_2_naming_it(cli, record, argv, flag, flow):
    reached = record(flow)
    line = one_line_error(cli(*argv), 2)
    assert flag in line
    assert argv[-1] in line or flag == "--frontend-only"
    assert "Traceback" not in line
    assert reached.calls == []


@pytest.mark.parametrize(("flag", "value"), [("--timeout", "x"), ("--interval", "0")])
def test_gh_dispatch_checks_its_seconds_flags(cli, record, monkeypatch, flag, value):
    monkeypatch.setenv("MOLTBUILD_GITHUB_REPO", "octo/moltbook")
    monkeypatch.setenv("GITHUB_TOKEN", CANARY)
    dispatched = record("moltbuild.ci.dispatch.dispatch_and_watch")
    line = one_line_error(cli("gh.dispatch", flag, value), 2)
    assert flag in line and repr(value) in line
    assert dispatched.calls == []


def test_gh_dispatch_bad_timeout_is_named_before_the_repository_is_looked_up(cli):
    line = one_line_error(cli("gh.dispatch", "--timeout", "x"), 2)
    assert "--timeout" in line


def test_a_bad_input_pair_names_the_flag(cli, record, monkeypatch):
    monkeypatch.setenv("MOLTBUILD_GITHUB_REPO", "octo/moltbook")
    monkeypatch.setenv("GITHUB_TOKEN", CANARY)
    dispatched = record("moltbuild.ci.dispatch.dispatch_and_watch")
    line = one_line_error(cli("gh.dispatch", "--input", "images"), 2)
    assert "--input 'images'" in line and dispatched.calls == []


# --- the edge -------------------------------------------------------------------------------


def one_task(func) -> Collection:
    return Collection(task(edge(func)))


@pytest.mark.parametrize("key", ["REGISTRY_PASSWORD", "GITHUB_TOKEN"])
def test_a_moltbuild_error_is_one_masked_line_with_its_exit_code(cli, monkeypatch, key):
    monkeypatch.setenv(key, CANARY)

    def refuse(c):
        run_context()
        raise MoltbuildError(f"the registry refused {CANARY} for push", exit_code=4)

    result = cli("refuse", namespace=one_task(refuse))
    assert one_line_error(result, 4) == "error: the registry refused **** for push"
    assert CANARY not in result.out + result.err


def test_an_error_keeps_its_class_exit_code(cli):
    def bad(c):
        raise ConfigError("--thing 'x' is wrong")

    def down(c):
        raise RegistryError("registry.lan: connection refused")

    assert one_line_error(cli("bad", namespace=one_task(bad)), 2) == "error: --thing 'x' is wrong"
    assert one_line_error(cli("down", namespace=one_task(down)), 1).endswith("connection refused")


def test_an_unexpected_exception_is_one_line_naming_the_traceback_setting(cli, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", CANARY)

    def crash(c):
        run_context()
        raise ValueError(f"bad input near {CANARY}\nsecond line of detail")

    result = cli("crash", namespace=one_task(crash))
    line = one_line_error(result, 70)
    assert "unexpected ValueError: bad input near ****" in line
    assert "MOLTBUILD_TRACEBACK=1" in line
    assert CANARY not in result.err and "second line" not in result.err
    assert "Traceback" not in result.err


def test_an_unexpected_message_is_cut_to_its_first_300_characters(cli):
    def crash(c):
        raise RuntimeError("x" * 1000)

    line = one_line_error(cli("crash", namespace=one_task(crash)), 70)
    assert "x" * 300 in line and "x" * 301 not in line


def raise_lookup(c):
    raise LookupError("no such image in the plan")


@pytest.mark.parametrize("value", ["1", "true", "on", "TRUE", "yes"])
def test_moltbuild_traceback_on_reraises(cli, monkeypatch, value):
    monkeypatch.setenv("MOLTBUILD_TRACEBACK", value)
    with pytest.raises(LookupError, match="no such image in the plan"):
        cli("raise-lookup", namespace=one_task(raise_lookup))


@pytest.mark.parametrize("value", ["0", "off", "false", ""])
def test_moltbuild_traceback_off_keeps_one_line(cli, monkeypatch, value):
    monkeypatch.setenv("MOLTBUILD_TRACEBACK", value)
    line = one_line_error(cli("raise-lookup", namespace=one_task(raise_lookup)), 70)
    assert "unexpected LookupError: no such image in the plan" in line


def test_moltbuild_traceback_in_env_local_counts(cli):
    (cli.project / ".env.local").write_text("MOLTBUILD_TRACEBACK=on\n")
    with pytest.raises(LookupError):
        cli("raise-lookup", namespace=one_task(raise_lookup))


def test_a_traceback_value_that_is_neither_on_nor_off_shows_the_traceback(cli, monkeypatch):
    monkeypatch.setenv("MOLTBUILD_TRACEBACK", "maybe")
    with pytest.raises(LookupError):
        cli("raise-lookup", namespace=one_task(raise_lookup))


def test_outside_a_project_the_environment_alone_decides(cli, monkeypatch, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert one_line_error(cli("raise-lookup", namespace=one_task(raise_lookup)), 70)
    monkeypatch.setenv("MOLTBUILD_TRACEBACK", "1")
    with pytest.raises(LookupError):
        cli("raise-lookup", namespace=one_task(raise_lookup))


def test_a_broken_pipe_exits_141_and_silences_stdout(cli, monkeypatch, tmp_path):
    out_path = tmp_path / "stdout"
    fake_stdout = open(out_path, "w")  # noqa: SIM115 - closed below; edge redirects its descriptor
    monkeypatch.setattr(sys, "stdout", fake_stdout)

    def head_left(c):
        print("first line")
        sys.stdout.flush()
        raise BrokenPipeError(32, "Broken pipe")

    try:
        result = cli("head-left", namespace=one_task(head_left))
        fake_stdout.write("after the reader left\n")
        fake_stdout.flush()
    finally:
        fake_stdout.close()
    assert result.code == 141
    assert result.err == ""
    assert out_path.read_text() == "first line\n"


def test_ctrl_c_exits_130_after_running_the_cleanups(cli):
    cleaned = []

    def interrupted(c):
        state.on_interrupt("test-cli-container", lambda: cleaned.append("removed"))
        raise KeyboardInterrupt

    try:
        result = cli("interrupted", namespace=one_task(interrupted))
    finally:
        state.done("test-cli-container")
    assert result.code == 130
    assert result.err_lines == ["interrupted: stopped every child process"]
    assert cleaned == ["removed"]
    assert state.interrupted()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_the_command_like_ctrl_c(cli, signum):
    def signalled(c):
        os.kill(os.getpid(), signum)
        for _ in range(500):  # the handler raises here
            time.sleep(0.01)

    result = cli("signalled", namespace=one_task(signalled))
    assert result.code == 128 + signum
    assert result.err_lines == [f"terminated ({signal.Signals(signum).name}): stopped every child process"]


def test_a_new_command_forgets_an_earlier_interrupt(cli):
    seen = []

    def look(c):
        seen.append(state.interrupted())

    state.interrupt()
    assert cli("look", namespace=one_task(look)).code == 0
    assert seen == [False]


def test_a_task_that_succeeds_returns_through_the_edge(cli):
    def fine(c, word="hello"):
        print(word)

    result = cli("fine", "--word", "moltbuild", namespace=one_task(fine))
    assert (result.code, result.out, result.err) == (0, "moltbuild\n", "")


# --- each adapter reaches its flow with the right request --------------------------------------


def test_build_flags_become_one_build_request(cli, record):
    built = record("moltbuild.flows.build.build_images", result=[])
    result = cli(
        "build", "--push", "--api-only", "--tag", "rc1", "--tag", "", "--jobs", "3", "--no-smoke", "--json"
    )
    assert result.code == 0, result.err
    (session, request), _ = built.one()
    assert request == BuildRequest(push=True, only=("api",), tags=("rc1",), jobs=3, smoke=False, as_json=True)
    assert session.settings.source("MOLTBUILD_BACKEND") == "pyproject.toml [tool.moltbuild] backend"
    assert not session.settings.flag("MOLTBUILD_VERBOSE")


def test_every_other_build_flag_reaches_the_request(cli, record):
    built = record("moltbuild.flows.build.build_images", result=[])
    argv = ["build", "--only", "frontend,api", "--api-only", "--platform", "linux/arm64", "--no-cache"]
    argv += ["--force", "--rebuild", "--changed", "--base", "HEAD~2", "--dry-run"]
    assert cli(*argv).code == 0
    (_, request), _ = built.one()
    assert request == BuildRequest(
        only=("frontend", "api"),
        platform="linux/arm64",
        no_cache=True,
        force=True,
        rebuild=True,
        changed=True,
        base="HEAD~2",
        dry_run=True,
    )


def test_backend_and_verbose_flags_set_settings_with_the_flag_as_source(cli, record, monkeypatch):
    monkeypatch.setenv("MOLTBUILD_BACKEND", "docker")
    built = record("moltbuild.flows.build.build_images", result=[])
    assert cli("build", "--backend", "buildah", "--verbose").code == 0
    assert cli("build").code == 0
    (flagged, _), _ = built.calls[0]
    (plain, _), _ = built.calls[1]
    assert flagged.settings["MOLTBUILD_BACKEND"] == "buildah"
    assert flagged.settings.source("MOLTBUILD_BACKEND") == "flag --backend"
    assert flagged.settings.flag("MOLTBUILD_VERBOSE")
    assert flagged.settings.source("MOLTBUILD_VERBOSE") == "flag --verbose"
    assert flagged.runner.verbose
    assert plain.settings["MOLTBUILD_BACKEND"] == "docker"
    assert plain.settings.source("MOLTBUILD_BACKEND") == "environment"
    assert plain.settings.source("MOLTBUILD_VERBOSE") == "default"


def test_build_dry_run_with_buildah_missing_renders_the_commands(cli):
    short = commit_all(cli.project)
    result = cli("build", "--dry-run", "--backend", "buildah", "--tag", "rc1")
    assert result.code == 0, result.err
    assert "buildah not installed" in result.out
    assert "dry run: what a real run would do" in result.out
    images = load_images(cli.project)
    registry = re.search(r'^registry = "(.+)"$', (cli.project / "pyproject.toml").read_text(), re.M)
    assert registry
    for cfg in images.values():
        bud = [
            line
            for line in result.out.splitlines()
            if line.startswith(f"[{cfg.name}] + ") and " bud " in line
        ]
        assert len(bud) == 1, result.out
        ref = f"{registry.group(1)}/{cfg.repository}"
        assert f"-t {ref}:sha-{short} " in bud[0] and f"-t {ref}:rc1 " in bud[0]
        assert f"-f {cfg.dockerfile} " in bud[0]
    assert not (cli.project / "build" / "images.json").exists()


def test_kaniko_build_flags_reach_settings_with_the_flag_as_source(cli, record, monkeypatch):
    monkeypatch.setenv("MOLTBUILD_KUBE_CONTEXT", "ctx-from-env")
    built = record("moltbuild.flows.build.build_images", result=[])
    argv = ["kaniko.build", "--namespace", "x", "--keep", "--timeout", "60", "--frontend-only"]
    assert cli(*argv, "--tag", "rc2", "--jobs", "1", "--no-cache", "--rebuild", "--dry-run").code == 0
    (session, request), _ = built.one()
    assert request == BuildRequest(
        push=True, only=("frontend",), tags=("rc2",), jobs=1, no_cache=True, rebuild=True, dry_run=True
    )
    settings = session.settings
    expected = {
        "MOLTBUILD_KUBE_NAMESPACE": ("x", "flag --namespace"),
        "MOLTBUILD_KANIKO_KEEP": ("1", "flag --keep"),
        "MOLTBUILD_KANIKO_TIMEOUT": ("60", "flag --timeout"),
        "MOLTBUILD_BACKEND": ("kaniko", "flag kaniko.build"),
        "MOLTBUILD_KUBE_CONTEXT": ("ctx-from-env", "environment"),
    }
    assert {key: (settings[key], settings.source(key)) for key in expected} == expected


def test_kaniko_build_without_flags_leaves_the_settings_alone(cli, record):
    built = record("moltbuild.flows.build.build_images", result=[])
    assert cli("kaniko.build").code == 0
    (session, request), _ = built.one()
    assert request.push and request.jobs == 2
    for key in ("MOLTBUILD_KUBE_NAMESPACE", "MOLTBUILD_KANIKO_KEEP", "MOLTBUILD_KANIKO_TIMEOUT"):
        assert not session.settings.source(key).startswith("flag"), key


@pytest.mark.parametrize(("flag", "push"), [("--push", True), ("--no-push", False)])
def test_kaniko_build_push_is_the_default_and_can_be_said_or_refused(cli, record, flag, push):
    built = record("moltbuild.flows.build.build_images", result=[])
    assert cli("kaniko.build", flag).code == 0
    (_, request), _ = built.one()
    assert request.push is push


def test_kaniko_build_dry_run_renders_jobs_in_the_flag_namespace(cli):
    commit_all(cli.project)
    result = cli("kaniko.build", "--dry-run", "--namespace", "builds-ns", "--timeout", "75", "--api-only")
    assert result.code == 0, result.err
    assert "[api]   activeDeadlineSeconds: 75" in result.out
    assert "namespace: builds-ns" in result.out
    assert "[frontend]" not in result.out


@pytest.mark.parametrize("value", ["abc", "0"])
def test_kaniko_timeout_is_refused_naming_the_flag(cli, value):
    commit_all(cli.project)
    result = cli("kaniko.build", "--dry-run", "--timeout", value)
    assert result.code == 2
    assert result.err_lines[-1].startswith("error: MOLTBUILD_KANIKO_TIMEOUT=")
    assert "(from flag --timeout)" in result.err_lines[-1]


def test_kaniko_setup_dry_run_prints_manifests_with_the_secret_masked(cli, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", CANARY)
    result = cli("kaniko.setup", "--dry-run", "--namespace", "builds-ns")
    assert result.code == 0, result.err
    assert "would apply to namespace builds-ns" in result.out
    assert "kind: Secret" in result.out and "'****'" in result.out
    assert CANARY not in result.out + result.err


def test_kaniko_dry_runs_work_in_a_project_without_k8s_kaniko(cli, monkeypatch):
    """The Job template, ServiceAccounts and Role ship with moltbuild: a project need not have them."""
    monkeypatch.setenv("GITHUB_TOKEN", CANARY)
    shutil.rmtree(cli.project / "k8s" / "kaniko")
    commit_all(cli.project)
    setup = cli("kaniko.setup", "--dry-run", "--namespace", "builds-ns")
    assert setup.code == 0, setup.err
    for shown in ("kind: ServiceAccount", "name: moltbuild-kaniko", "kind: Role", "kind: RoleBinding"):
        assert shown in setup.out
    build = cli("kaniko.build", "--dry-run", "--namespace", "builds-ns", "--api-only")
    assert build.code == 0, build.err
    assert "[api] kind: Job" in build.out and "[api]   namespace: builds-ns" in build.out
    assert "[api]       serviceAccountName: moltbuild-kaniko" in build.out
    assert not (cli.project / "k8s" / "kaniko").exists() and CANARY not in setup.out + build.out


def test_kaniko_setup_passes_namespace_context_and_dry_run(cli, record):
    setup = record("moltbuild.flows.kaniko.setup_cluster")
    assert cli("kaniko.setup", "--namespace", "n1", "--context", "c1").code == 0
    (session,), kwargs = setup.one()
    assert kwargs == {"dry_run": False}
    assert session.settings.source("MOLTBUILD_KUBE_CONTEXT") == "flag --context"
    assert (session.settings["MOLTBUILD_KUBE_NAMESPACE"], session.settings["MOLTBUILD_KUBE_CONTEXT"]) == (
        "n1",
        "c1",
    )


def test_push_reaches_push_built(cli, record):
    pushed = record("moltbuild.flows.publish.push_built", result=[])
    assert cli("push", "--only", "api", "--dry-run", "--json", "--verbose").code == 0
    (session,), kwargs = pushed.one()
    assert kwargs == {"only": "api", "dry_run": True, "as_json": True}
    assert session.settings.source("MOLTBUILD_VERBOSE") == "flag --verbose"


def test_pipeline_reaches_run_pipeline_with_a_push_request(cli, record):
    ran = record("moltbuild.flows.pipeline.run_pipeline")
    assert cli("pipeline", "--jobs", "4").code == 0
    (_, request), _ = ran.one()
    assert request == BuildRequest(push=True, jobs=4)


def test_changed_reaches_show_changed(cli, record):
    shown = record("moltbuild.flows.changed.show_changed", result=[])
    assert cli("changed", "--base", "origin/main", "--json").code == 0
    assert cli("changed").code == 0
    assert [kwargs for _, kwargs in shown.calls] == [
        {"base": "origin/main", "as_json": True},
        {"base": None, "as_json": False},
    ]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["clean", "--dry-run"], {"everything": False, "backend": None, "dry_run": True}),
        (
            ["clean", "--all", "--backend", "docker"],
            {"everything": True, "backend": "docker", "dry_run": False},
        ),
    ],
)
def test_clean_reaches_the_clean_flow(cli, record, argv, expected):
    cleaned = record("moltbuild.flows.clean.clean", result={})
    assert cli(*argv).code == 0
    assert cleaned.one()[1] == expected


def test_clean_refuses_a_store_it_does_not_know(cli):
    line = one_line_error(cli("clean", "--dry-run", "--backend", "kaniko"), 2)
    assert "--backend kaniko" in line


def test_setup_gives_the_packages_step_a_dry_runner(cli, record):
    installed = record("moltbuild.system.packages.setup", result=[])
    built = record("moltbuild.system.gotools.prepare", result={})
    background = record("moltbuild.flows.install.start_background", result=None)
    relocked = record("moltbuild.flows.install.relock_tools", result=None)
    assert cli("setup", "--dry-run").code == 0
    assert cli("setup").code == 0  # the Go tools in the background: the command returns
    assert cli("setup", "--wait").code == 0
    assert cli("setup", "--relock").code == 0
    assert cli("setup", "--tests").code == 0
    assert [args[0].dry_run for args, _ in installed.calls] == [True, False, False, False, False]
    assert [kw["tests"] for _, kw in installed.calls] == [False, False, False, False, True]
    assert [args[0].dry_run for args, _ in built.calls] == [True, False]  # --dry-run and --wait
    assert len(background.calls) == 2 and len(relocked.calls) == 1


def check(verdict: str, ref: str) -> Check:
    digest = "sha256:" + "a" * 64
    actual = digest if verdict == "ok" else "sha256:" + "b" * 64
    reason = "" if verdict == "ok" else "the registry serves another digest"
    return Check("report", ref.split(":")[0], ref, digest, actual, verdict, reason)


def test_verify_prints_its_checks_and_exits_0_when_all_hold(cli, record):
    checks = [check("ok", "ghcr.io/o/api:rc1"), check("ok", "ghcr.io/o/frontend:rc1")]
    verified = record("moltbuild.flows.verify.verify", result=checks)
    result = cli(
        "verify",
        "--report",
        "r.json",
        "--kustomization",
        "k8s/kustomization.yml",
        "--json",
        "--require-signed",
    )
    assert result.code == 0, result.err
    (session,), kwargs = verified.one()
    assert type(session.registries).__name__ == "Registries"  # the run's clients, one per host
    assert kwargs == {
        "report_path": Path("r.json"),
        "kustomization": Path("k8s/kustomization.yml"),
        "attestations": True,
        "require_signed": True,
    }
    shown = json.loads(result.out)
    assert shown["ok"] is True and [c["ref"] for c in shown["checks"]] == [c.ref for c in checks]


def test_verify_help_shows_require_signed_as_declared_in_the_flag_table(cli):
    from moltbuild.cli.flags import FLAGS

    result = cli("verify", "--help")
    assert result.code == 0, result.err
    assert "--require-signed" in result.out
    assert " ".join(FLAGS["require_signed"].help.split()[:4]) in " ".join(result.out.split())


def test_verify_fails_naming_the_first_bad_check(cli, record):
    checks = [check("ok", "ghcr.io/o/api:rc1"), check("mismatch", "ghcr.io/o/frontend:rc1")]
    verified = record("moltbuild.flows.verify.verify", result=checks)
    result = cli("verify", "--no-attestations")
    assert verified.one()[1] == {
        "report_path": None,
        "kustomization": None,
        "attestations": False,
        "require_signed": False,
    }
    assert "mismatch" in result.out
    line = one_line_error(result, RegistryError.exit_code)
    assert "1 of 2 checks failed" in line and "ghcr.io/o/frontend:rc1" in line


def test_verify_without_a_report_says_how_to_make_one(cli):
    line = one_line_error(cli("verify"), 2)
    assert "images.json not found" in line and "invoke build" in line


def test_tag_with_source_retags_in_the_registry(cli, record):
    retagged = record("moltbuild.registry.promote.retag", result="sha256:" + "c" * 64)
    built = record("moltbuild.flows.publish.tag_built")
    assert cli("tag", "--source", "ghcr.io/o/api:sha-1", "--tag", "rc1", "--tag", "stable").code == 0
    (settings, source, tags), kwargs = retagged.one()
    assert (source, tags) == ("ghcr.io/o/api:sha-1", ["rc1", "stable"])
    assert settings.project_root == cli.project.resolve()
    assert callable(kwargs["say"])
    assert built.calls == []


def test_tag_without_source_tags_the_last_build(cli, record):
    built = record("moltbuild.flows.publish.tag_built", result=[])
    retagged = record("moltbuild.registry.promote.retag")
    assert cli("tag", "--tag", "rc1", "--only", "api", "--dry-run", "--json").code == 0
    (_, tags), kwargs = built.one()
    assert tags == ["rc1"]
    assert kwargs == {"only": "api", "dry_run": True, "as_json": True}
    assert retagged.calls == []


def test_tag_needs_a_tag(cli):
    assert "at least one --tag" in one_line_error(cli("tag"), 2)
    assert "at least one --tag" in one_line_error(cli("tag", "--source", "ghcr.io/o/api:1"), 2)


def test_tag_with_source_and_dry_run_writes_nothing(cli, monkeypatch):
    asked = []
    monkeypatch.setattr(
        "moltbuild.registry.auth.Registries.client", lambda self, host, creds=None: asked.append(host)
    )
    result = cli("tag", "--source", "ghcr.io/o/api:sha-1", "--tag", "rc1", "--dry-run")
    assert result.code == 0, result.err
    assert asked == []  # no registry contacted, nothing written
    assert "+ PUT ghcr.io/o/api:rc1 (the manifest ghcr.io/o/api:sha-1 serves)" in result.out


def test_smoke_static_checks_the_project_for_real(cli):
    result = cli("smoke", "--static")
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        "manifests: read from k8s/kustomization.yml and its resources (no kustomize or kubectl on PATH)",
        "api: 2 probes of 1 workload (k8s/api.yml) checked",
        "frontend: 2 probes of 1 workload (k8s/frontend.yml) checked",
        "probes: every probe port is EXPOSEd by its image",
    ]


def test_smoke_static_notes_an_image_no_workload_runs_and_claims_nothing_for_zero_probes(cli):
    kustomization = cli.project / "k8s" / "kustomization.yml"
    kustomization.write_text(kustomization.read_text().replace("  - frontend.yml\n", ""))
    result = cli("smoke", "--static", "--only", "frontend")
    assert result.code == 0, result.err
    assert result.out.splitlines()[1:] == [
        "frontend: note: no workload in k8s/ runs ghcr.io/ardenone/moltbook-frontend; no probe to check",
        "probes: none to check: no workload in k8s/ has an httpGet probe for these images",
    ]


def test_smoke_static_names_a_probe_port_the_image_does_not_expose(cli):
    dockerfile = load_images(cli.project)["api"].dockerfile
    text = dockerfile.read_text()
    assert re.search(r"^EXPOSE ", text, re.M)
    dockerfile.write_text(re.sub(r"^EXPOSE .*$", "", text, flags=re.M))
    result = cli("smoke", "--static", "--only", "api")
    assert result.code == 2
    assert "which the image does not EXPOSE (nothing)" in result.err
    assert "probes: every probe port" not in result.out


def test_smoke_without_static_runs_the_checks(cli, record):
    ran = record("moltbuild.flows.smoke.run_checks")
    static = record("moltbuild.flows.smoke.static_check")
    assert cli("smoke", "--only", "api", "--ref", "ghcr.io/o/api:rc1").code == 0
    assert ran.one()[1] == {"only": "api", "ref": "ghcr.io/o/api:rc1"}
    assert static.calls == []


def test_env_show_prints_each_setting_with_its_source_and_masks_secrets(cli, monkeypatch):
    monkeypatch.setenv("REGISTRY_PASSWORD", CANARY)
    monkeypatch.setenv("MOLTBUILD_KUBE_NAMESPACE", "from-env")
    monkeypatch.setenv("MOLTBUILD_BAKCEND", "docker")
    (cli.project / ".env.local").write_text("MOLTBUILD_IMAGE_FORMAT=docker\n")
    result = cli("env.show")
    assert result.code == 0, result.err
    rows = {line.split()[0]: line.split() for line in result.out.splitlines()[2:] if line.strip()}
    assert set(rows) == set(KEYS)
    assert rows["REGISTRY_PASSWORD"][1:3] == ["****", "environment"]
    assert rows["MOLTBUILD_KUBE_NAMESPACE"][1:3] == ["from-env", "environment"]
    assert rows["MOLTBUILD_IMAGE_FORMAT"][1:3] == ["docker", ".env.local:1"]
    assert rows["MOLTBUILD_BACKEND"][2] == "pyproject.toml"
    assert rows["GITHUB_TOKEN"][1:3] == ["(unset)", "default"]
    assert CANARY not in result.out + result.err
    assert "did you mean MOLTBUILD_BACKEND?" in result.err


def test_env_show_stops_on_a_bad_setting_naming_it(cli, monkeypatch):
    monkeypatch.setenv("MOLTBUILD_KEEP_IMAGES", "perhaps")
    line = one_line_error(cli("env.show"), 2)
    assert "MOLTBUILD_KEEP_IMAGES='perhaps' (from environment)" in line


def test_doctor_json_reports_what_works_here(cli, monkeypatch):
    monkeypatch.setenv("MOLTBUILD_BAKCEND", "buildah")
    result = cli("doctor", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert {name: b["available"] for name, b in report["backends"].items() if name != "kaniko"} == {
        "docker": False,
        "buildah": False,
    }
    assert report["auto"]["backend"] is None
    assert report["registry"]["source"] == "pyproject.toml [tool.moltbuild] registry"
    assert any("MOLTBUILD_BAKCEND" in w for w in report["warnings"])
    assert "warning: unknown setting MOLTBUILD_BAKCEND" in result.err


def test_doctor_table(cli):
    result = cli("doctor")
    assert result.code == 0, result.err
    assert "auto picks: nothing" in result.out
    assert "problems and fixes:" in result.out


def test_k8s_set_images_passes_paths_and_flags(cli, record):
    pinned = record("moltbuild.k8s.kustomize.pin_pushed", result=[])
    assert cli("k8s.set-images", "--report", "r.json", "--kustomization", "k.yml", "--only", "api").code == 0
    assert cli("k8s.set-images", "--no-digest", "--dry-run").code == 0
    calls = [kwargs for _, kwargs in pinned.calls]
    for kwargs in calls:  # the run context's runner (output, children's environment) and root
        assert kwargs.pop("runner").environ["HOME"] == os.environ["HOME"]
        assert kwargs.pop("root") == cli.project.resolve()
        assert sorted(kwargs.pop("images")) == ["api", "frontend"]  # the run context's, read once
    assert calls == [
        {
            "report_path": Path("r.json"),
            "kustomization": Path("k.yml"),
            "only": "api",
            "no_digest": False,
            "dry_run": False,
        },
        {"report_path": None, "kustomization": None, "only": "", "no_digest": True, "dry_run": True},
    ]


KUSTOMIZATION = """---
# deployed by Argo CD from this file
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - api.yml   # the api Deployment
# Pinned by `invoke k8s.set-images`
images:
  # the api; newTag moves with every push
  - name: ghcr.io/ardenone/moltbook-api
    newName: ghcr.io/ardenone/moltbook-api   # same registry
    newTag: 'latest'
  # the frontend is pinned by hand
  - {name: ghcr.io/ardenone/moltbook-frontend, newTag: v1}
"""


def pinning_project(cli) -> Path:
    """The project committed with KUSTOMIZATION and a report of one pushed image (under build/,
    ignored like the repository's own .gitignore does)."""
    from tests.unit.records import pushed_entry

    (cli.project / ".gitignore").write_text("build/\n")
    kust = cli.project / "k8s" / "kustomization.yml"
    kust.write_text(KUSTOMIZATION)
    commit_all(cli.project)
    report_path = cli.project / "build" / "images.json"
    report_path.parent.mkdir()
    report_path.write_text(json.dumps({"version": 1, "images": [pushed_entry("api")]}))
    return kust


def test_k8s_set_images_dry_run_creates_nothing_and_the_real_run_changes_only_the_kustomization(cli):
    kust = pinning_project(cli)
    home = Path(os.environ["HOME"])
    git_dir = Path(git(cli.project, "rev-parse", "--absolute-git-dir"))
    files_before = sorted(p for p in cli.project.rglob("*") if ".git" not in p.parts)

    dry = cli("k8s.set-images", "--dry-run")
    assert dry.code == 0, dry.err
    assert "+    newTag: sha-abc1234" in dry.out and "-    newTag: 'latest'" in dry.out
    assert kust.read_text() == KUSTOMIZATION
    assert git(cli.project, "status", "--porcelain", "--untracked-files=all") == ""
    assert sorted(p for p in cli.project.rglob("*") if ".git" not in p.parts) == files_before
    assert not (git_dir / "moltbuild").exists() and list(home.iterdir()) == []  # no lock anywhere

    done = cli("k8s.set-images")
    assert done.code == 0, done.err
    assert git(cli.project, "status", "--porcelain", "--untracked-files=all") == "M k8s/kustomization.yml"
    digest = "sha256:" + "2" * 64
    pinned = KUSTOMIZATION.replace(
        "ghcr.io/ardenone/moltbook-api   #", "reg.example:5000/ns/moltbook-api   #"
    )
    pinned = pinned.replace("    newTag: 'latest'\n", f"    newTag: sha-abc1234\n    digest: {digest}\n")
    assert kust.read_text() == pinned  # byte for byte: the `---`, the comments, quoting, the flow entry
    assert [p.name.split("-")[0] for p in (git_dir / "moltbuild").glob("*.lock")] == ["kustomization.yml"]
    again = cli("k8s.set-images")
    assert again.code == 0 and "nothing to change" in again.out


def test_k8s_commit_pins_commits_the_project_kustomization(cli, record):
    committed = record("moltbuild.ci.pins.commit_and_push")
    assert cli("k8s.commit-pins", "--attempts", "5", "--remote", "up", "--branch", "pins").code == 0
    assert cli("k8s.commit-pins", "--kustomization", "other.yml", "--message", "m").code == 0
    (root, files), kwargs = committed.calls[0]
    assert root == cli.project.resolve()
    assert files == [root / "k8s" / "kustomization.yml"]
    assert (kwargs["attempts"], kwargs["remote"], kwargs["branch"]) == (5, "up", "pins")
    assert kwargs["message"] == "Pin images built by moltbuild"
    assert kwargs["pull_request"] is False and callable(kwargs["open_pull"])
    (_, files), kwargs = committed.calls[1]
    assert files == [Path("other.yml")]
    assert (kwargs["attempts"], kwargs["message"], kwargs["remote"]) == (3, "m", "origin")
    assert cli("k8s.commit-pins", "--pull-request").code == 0
    assert committed.calls[2][1]["pull_request"] is True


def test_gh_dispatch_reaches_dispatch_and_watch(cli, record, monkeypatch):
    monkeypatch.setenv("MOLTBUILD_GITHUB_REPO", "octo/moltbook")
    monkeypatch.setenv("GITHUB_TOKEN", CANARY)
    dispatched = record("moltbuild.ci.dispatch.dispatch_and_watch")
    argv = ["gh.dispatch", "--ref", "rel", "--input", "images=api", "--input", "tag=rc1", "--watch"]
    assert cli(*argv, "--timeout", "90", "--interval", "2.5").code == 0
    (client,), kwargs = dispatched.one()
    assert client.repo == "octo/moltbook"
    assert kwargs["inputs"] == {"images": "api", "tag": "rc1"}
    assert (kwargs["workflow"], kwargs["ref"], kwargs["watch"]) == ("build-images.yml", "rel", True)
    assert (kwargs["timeout"], kwargs["interval"]) == (90.0, 2.5)


def test_gh_runs_lists_the_runs_the_client_returns(cli, record):
    asked = []
    runs = [{"run_number": 41, "status": "completed", "conclusion": "success", "event": "push"}]

    class Client:
        def runs(self, workflow, limit):
            asked.append((workflow, limit))
            return runs

    record("moltbuild.ci.github.client", result=Client())
    result = cli("gh.runs", "--workflow", "other.yml", "--limit", "3")
    assert result.code == 0, result.err
    assert asked == [("other.yml", 3)]
    assert "41" in result.out and "push" in result.out


def test_gh_runs_without_a_repository_says_how_to_set_one(cli):
    line = one_line_error(cli("gh.runs"), 2)
    assert "MOLTBUILD_GITHUB_REPO" in line


# --- hints after invoke's own parse errors ------------------------------------------------------


def test_a_misspelt_task_gets_a_did_you_mean(cli):
    result = cli("buidl")
    assert result.code == 1
    assert "No idea what 'buidl' is! Did you mean 'build'?" in result.err
    assert "`invoke --list`" in result.err


def test_a_misspelt_namespaced_task_gets_a_did_you_mean(cli):
    assert "Did you mean 'k8s.set-images'?" in cli("k8s.set-imgs").err


def test_a_misspelt_flag_gets_a_did_you_mean(cli, record):
    built = record("moltbuild.flows.build.build_images")
    result = cli("build", "--pussh")
    assert result.code == 1
    assert "No idea what '--pussh' is! Did you mean '--push'?" in result.err
    assert built.calls == []


def test_a_misspelt_core_flag_gets_a_did_you_mean(cli):
    assert "Did you mean '--list'?" in cli("--lisst").err


def test_a_word_close_to_nothing_gets_no_guess_but_the_pointer(cli):
    result = cli("zzzqqq")
    assert result.code == 1
    assert "Did you mean" not in result.err
    assert "`invoke --help TASK` its flags" in result.err


def test_other_parse_errors_are_left_as_invoke_says_them(cli):
    result = cli("build", "--jobs")
    assert result.code == 1
    assert "jobs" in result.err and "needed value" in result.err
    assert "Did you mean" not in result.err and "invoke --list" not in result.err


def test_installing_the_hints_twice_wraps_the_parser_once():
    before = Parser.parse_argv
    assert getattr(before, "moltbuild_hints", False)
    hints.install(Collection())
    assert Parser.parse_argv is before


# --- the build flags, declared once (cli/flags.py) ----------------------------------------------


def test_build_and_kaniko_build_share_each_flag_and_its_help():
    build, kaniko = FLAG_HELP["build"], FLAG_HELP["kaniko.build"]
    shared = set(build) & set(kaniko)
    assert {"push", "api-only", "frontend-only", "only", "tag", "no-cache", "jobs", "dry-run"} <= shared
    assert {flag: kaniko[flag] for flag in shared} == {flag: build[flag] for flag in shared}
    assert set(kaniko) - set(build) == {"namespace", "context", "timeout", "keep"}  # the cluster's own
    assert FLAG_HELP["pipeline"] == {"jobs": build["jobs"]}


def test_a_name_only_flag_names_its_image_in_its_help():
    assert FLAG_HELP["build"]["api-only"] == "build only the api image (as --only api)"


def test_a_name_only_flag_for_an_image_the_project_lacks_is_one_line(cli):
    pyproject = cli.project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace("[tool.moltbuild.images.api]", "[tool.moltbuild.images.web]")
    )
    commit_all(cli.project)
    line = one_line_error(cli("build", "--api-only", "--dry-run"), 2)
    assert "unknown image 'api'; known: web, frontend" in line and "[tool.moltbuild.images]" in line
