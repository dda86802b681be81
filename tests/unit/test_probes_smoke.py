"""Probes read from k8s manifests and Dockerfiles (no process), and the smoke check run against a
tiny podman stand-in: a python script in tmp_path whose "container" is the test machine and whose
published port is an HTTP server the test starts on an ephemeral port."""

from __future__ import annotations

import json
import socket
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from moltbuild.dockerfile import Dockerfile
from moltbuild.errors import ConfigError, JobError
from moltbuild.project import ImageConfig
from moltbuild.smoke import run as smoke
from moltbuild.smoke.probes import (
    Healthcheck,
    HttpCheck,
    SmokePlan,
    deployment_checks,
    dockerfile_healthcheck,
    smoke_plan,
    smoke_plan_for,
    static_problems,
)
from moltbuild.smoke.run import ContainerRuntime, exposed_ports, healthcheck_of, run_smoke, stop_all
from moltbuild.system import state
from moltbuild.system.processes import Runner

PY = sys.executable
API = "ghcr.io/acme/api"

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  template:
    spec:
      containers:
        - name: api
          image: ghcr.io/acme/api:1.2
          ports: [{name: http, containerPort: 8000}, {name: admin, containerPort: 9000}]
          readinessProbe: {httpGet: {path: /ready, port: http}}
          livenessProbe: {httpGet: {port: 8000}}
          startupProbe: {exec: {command: [true]}}
        - name: sidecar
          image: ghcr.io/acme/proxy:1
          readinessProbe: {httpGet: {path: /proxy, port: 7000}}
        - name: odd
          image: "Not A Valid Ref"
          readinessProbe: {httpGet: {path: /odd, port: 1}}
---
apiVersion: v1
kind: Service
metadata: {name: api}
spec: {ports: [{port: 80}]}
---
"""

STATEFULSET = """\
kind: StatefulSet
metadata: {name: api-db}
spec:
  template:
    spec:
      containers:
        - image: ghcr.io/acme/api@sha256:0000000000000000000000000000000000000000000000000000000000000000
          readinessProbe: {httpGet: {path: /db, port: "9100"}}
"""


def manifests(root: Path, files: dict[str, str]) -> Path:
    (root / "k8s").mkdir(exist_ok=True)
    for name, text in files.items():
        (root / "k8s" / name).write_text(text)
    return root


def dockerfile(root: Path, text: str) -> Path:
    path = root / "Dockerfile"
    path.write_text(textwrap.dedent(text))
    return path


# === probes: manifests ===========================================================================


def test_every_http_probe_of_every_workload_running_the_image(tmp_path):
    root = manifests(tmp_path, {"api.yml": DEPLOYMENT, "db.yaml": STATEFULSET, "notes.json": "{}"})
    assert deployment_checks(root, API) == [
        HttpCheck("/ready", 8000, "k8s/api.yml Deployment api readinessProbe"),
        HttpCheck("/", 8000, "k8s/api.yml Deployment api livenessProbe"),
        HttpCheck("/db", 9100, "k8s/db.yaml StatefulSet api-db readinessProbe"),
    ]
    assert [c.path for c in deployment_checks(root, "ghcr.io/acme/proxy")] == ["/proxy"]
    assert deployment_checks(root, "ghcr.io/acme/other") == []


def test_no_k8s_directory_means_no_probe(tmp_path):
    assert deployment_checks(tmp_path, API) == []


def test_an_edited_manifest_is_read_again(tmp_path):
    root = manifests(tmp_path, {"api.yml": DEPLOYMENT})
    assert deployment_checks(root, API)[1].port == 8000
    manifests(root, {"api.yml": DEPLOYMENT.replace("httpGet: {port: 8000}", "httpGet: {port: 8001}")})
    assert deployment_checks(root, API)[1].port == 8001


def test_a_port_name_the_container_does_not_define_is_an_error(tmp_path):
    root = manifests(tmp_path, {"api.yml": DEPLOYMENT.replace("port: http}", "port: web}")})
    with pytest.raises(ConfigError) as info:
        deployment_checks(root, API)
    assert info.value.message == (
        "k8s/api.yml Deployment api readinessProbe uses port 'web', which the container does not name "
        "in ports:; fix the manifest"
    )


def test_invalid_yaml_names_the_file(tmp_path):
    root = manifests(tmp_path, {"bad.yml": "kind: Deployment\nspec: [unclosed\n"})
    with pytest.raises(ConfigError, match=r"k8s/bad\.yml:\d+: invalid YAML; fix the syntax$"):
        deployment_checks(root, API)


def test_static_problems_are_probes_on_ports_the_image_does_not_expose(tmp_path):
    root = manifests(tmp_path, {"api.yml": DEPLOYMENT, "db.yaml": STATEFULSET})
    assert static_problems(root, API, {8000, 9100}) == []
    assert static_problems(root, API, {8000, 8080}) == [
        "k8s/db.yaml StatefulSet api-db readinessProbe: GET /db on port 9100, which the image does not "
        "EXPOSE (8000, 8080)"
    ]
    assert static_problems(root, API, set())[0].endswith("does not EXPOSE (nothing)")


# === probes: the smoke plan ======================================================================


def test_the_plan_adds_the_smoke_table_and_asks_each_path_and_port_once(tmp_path):
    root = manifests(tmp_path, {"api.yml": DEPLOYMENT})
    configured = {"path": "/ready", "port": 8000, "command": ["api", "--check"]}
    plan = smoke_plan(root, API, configured, "[img]")
    assert plan.http == (
        HttpCheck("/ready", 8000, "k8s/api.yml Deployment api readinessProbe"),  # the first origin stays
        HttpCheck("/", 8000, "k8s/api.yml Deployment api livenessProbe"),
    )
    assert plan.command == ("api", "--check") and plan.healthcheck is None
    extra = smoke_plan(root, API, {"path": "/metrics", "port": 9000}, "[img]")
    assert extra.http[-1] == HttpCheck("/metrics", 9000, "[img] smoke")
    assert extra.ports == (8000, 9000)
    assert smoke_plan(tmp_path / "elsewhere", API, None, "[img]") == SmokePlan()


@pytest.mark.parametrize(
    "configured, message",
    [
        ({"url": "/x"}, r"^\[img\] smoke has unknown key 'url'; allowed: path, port, command, env$"),
        ({"path": "/x"}, r"^\[img\] smoke.path needs smoke.port \(the container's port, a number\)$"),
        ({"path": "/x", "port": "8000"}, r"smoke.path needs smoke.port"),
        ({"command": "app --check"}, r"^\[img\] smoke.command must be a list of strings"),
        ({"command": []}, r"smoke.command must be a list of strings, e.g. \['app', '--check'\]"),
        ({"command": ["app", 1]}, r"smoke.command must be a list of strings"),
        ({"env": "A=1"}, r"^\[img\] smoke.env must be a table of variable = \"value\", e.g. env = "),
        ({"env": {"A B": "1"}}, r"^\[img\] smoke.env: 'A B' is not a variable name; e.g. env = "),
        ({"env": {"PORT": 8000}}, r"^\[img\] smoke.env.PORT must be a string \(quote it\), e.g. env = "),
    ],
)
def test_a_bad_smoke_table_says_what_to_write(tmp_path, configured, message):
    with pytest.raises(ConfigError, match=message):
        smoke_plan(tmp_path, API, configured, "[img]")


def test_the_plan_of_a_configured_image_reads_its_dockerfile_stage(tmp_path):
    root = manifests(tmp_path, {"api.yml": DEPLOYMENT})
    df = dockerfile(
        root,
        """\
        FROM python AS test
        HEALTHCHECK CMD ["pytest"]
        FROM python AS app
        HEALTHCHECK --retries=1 CMD ["app", "--health"]
        """,
    )
    cfg = ImageConfig("api", "api", root, df, target="test", smoke={"command": ["true"]}, manifest_name=API)
    plan = smoke_plan_for(root, cfg)
    assert plan.healthcheck == Healthcheck(("pytest",))
    assert plan.command == ("true",) and len(plan.http) == 2
    cfg = ImageConfig("api", "api", root, df, smoke={"bogus": 1}, manifest_name=API)
    with pytest.raises(ConfigError, match=r"^\[tool.moltbuild.images.api\] smoke has unknown key 'bogus'"):
        smoke_plan_for(root, cfg)
    missing = ImageConfig("api", "api", root, root / "absent", manifest_name=API)
    assert smoke_plan_for(root, missing).healthcheck is None


# === probes: Dockerfiles =========================================================================


def test_exposed_ports_of_the_last_stage(tmp_path):
    df = dockerfile(
        tmp_path,
        """\
        FROM node AS build
        EXPOSE 3000
        FROM nginx
        # EXPOSE 1234
        EXPOSE 80/tcp \\
               443 $PORT

        EXPOSE 53/udp
        """,
    )
    assert Dockerfile.read(df).stage().exposed == {80, 443, 53}
    assert Dockerfile.read(dockerfile(tmp_path, "FROM scratch\n")).stage().exposed == set()


def test_healthcheck_forms_options_and_defaults(tmp_path):
    df = dockerfile(
        tmp_path,
        """\
        HEALTHCHECK CMD ["before-any-stage"]
        # HEALTHCHECK CMD ["commented"]
        from python as app
        healthcheck --interval=1h2m3.5s --timeout=250ms --start-period=1500us --retries=many CMD [not json
        """,
    )
    assert dockerfile_healthcheck(df) == Healthcheck(("/bin/sh", "-c", "[not json"), 3723.5, 0.25, 0.0015, 3)
    short = dockerfile(tmp_path, 'FROM x\nHEALTHCHECK --timeout=10µs --interval=5ns CMD ["a", 1]\n')
    got = dockerfile_healthcheck(short)
    assert got.argv == ("/bin/sh", "-c", '["a", 1]')  # not a list of strings: the shell form
    assert (got.interval_s, got.timeout_s) == (pytest.approx(5e-9), pytest.approx(1e-5))
    with pytest.raises(ConfigError, match="no FROM instruction"):
        dockerfile_healthcheck(dockerfile(tmp_path, ""))
    assert (
        dockerfile_healthcheck(dockerfile(tmp_path, 'FROM x\nHEALTHCHECK CMD ["a"]\nHEALTHCHECK none\n'))
        is None
    )
    with pytest.raises(ConfigError, match=r"no stage named 'zz' \(target\); stages: one"):
        dockerfile_healthcheck(dockerfile(tmp_path, 'FROM a AS one\nHEALTHCHECK CMD ["x"]\n'), "zz")


@pytest.mark.parametrize(
    "line, message",
    [
        ("HEALTHCHECK --interval=5s", "expected CMD [...] or NONE after the options, got ''"),
        ("HEALTHCHECK CMD", "expected CMD [...] or NONE after the options, got 'CMD'"),
        ("HEALTHCHECK RUN true", "expected CMD [...] or NONE after the options, got 'RUN true'"),
        ("HEALTHCHECK --timeout=30sx CMD true", "'30sx' is not a duration such as 30s, 1m30s or 500ms"),
        ("HEALTHCHECK --start-period=1d CMD true", "'1d' is not a duration such as 30s, 1m30s or 500ms"),
    ],
)
def test_a_malformed_healthcheck_names_the_dockerfile(tmp_path, line, message):
    df = dockerfile(tmp_path, f"FROM x\n{line}\n")
    with pytest.raises(ConfigError) as info:
        dockerfile_healthcheck(df)
    assert info.value.message == f"{df} HEALTHCHECK: {message}"


def test_the_target_stage_is_found_when_from_has_a_platform_flag(tmp_path):
    df = dockerfile(
        tmp_path,
        'FROM --platform=$BUILDPLATFORM python AS app\nHEALTHCHECK CMD ["app"]\nFROM busybox AS debug\n',
    )
    assert dockerfile_healthcheck(df, target="app") == Healthcheck(("app",))


def test_a_stage_inherits_the_healthcheck_of_the_stage_it_is_built_from(tmp_path):
    df = dockerfile(
        tmp_path, 'FROM python AS base\nHEALTHCHECK CMD ["check"]\nFROM base AS final\nRUN true\n'
    )
    assert dockerfile_healthcheck(df) == Healthcheck(("check",))


# === smoke: image config =========================================================================


def test_healthcheck_of_an_image_config():
    assert healthcheck_of({}) is None
    assert healthcheck_of({"Healthcheck": {"Test": ["NONE"]}}) is None
    assert healthcheck_of({"Healthcheck": {"Test": ["CMD", "app", "--ok"]}}) == Healthcheck(("app", "--ok"))
    shell = {"Test": ["CMD-SHELL", "curl -f localhost"], "Interval": 2e9, "Timeout": 5e8, "StartPeriod": 1e9}
    assert healthcheck_of({"Healthcheck": {**shell, "Retries": 7}}) == Healthcheck(
        ("/bin/sh", "-c", "curl -f localhost"), 2.0, 0.5, 1.0, 7
    )


def test_exposed_ports_of_an_image_config():
    assert exposed_ports({"ExposedPorts": {"8000/tcp": {}, "53/udp": {}, "$PORT/tcp": {}}}) == {8000, 53}
    assert exposed_ports({}) == set()


# === smoke: against a podman stand-in =============================================================

FAKE_PODMAN = """\
import json, subprocess, sys
from pathlib import Path

state = Path(__file__).parent / "state"
args = sys.argv[1:]
with (state / "calls.jsonl").open("a") as log:
    log.write(json.dumps(args) + "\\n")


def read(name, default=""):
    path = state / name
    return path.read_text() if path.exists() else default


if args[:2] == ["image", "inspect"]:
    if (state / "no-image").exists():
        sys.exit("Error: no such image " + args[2])
    sys.stdout.write(read("inspect.json", "[]"))
elif args[0] == "run":
    if (state / "run-fails").exists():
        sys.exit("Error: cannot start")
    print("c0ffee")
elif args[0] == "port":
    host = json.loads(read("ports.json", "{}")).get(args[2].split("/")[0])
    if host:
        print(f"0.0.0.0:{host}\\n[::]:{host}")
elif args[0] == "inspect":
    print(read("status", "running 0"))
elif args[0] == "exec":
    sys.exit(subprocess.call(args[2:]))
elif args[0] == "logs":
    print(read("logs"), end="")
"""


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        code = {"/healthz": 200, "/moved": 302}.get(self.path, 404)
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class Fake:
    """The stand-in CLI, its state directory and the calls it received."""

    def __init__(self, root: Path):
        self.script = root / "podman.py"
        self.script.write_text(FAKE_PODMAN)
        self.state = root / "state"
        self.state.mkdir()
        self.said: list[str] = []
        self.runtime = ContainerRuntime(
            Runner(out=self.said.append), [PY, str(self.script)], run_flags=("--rm",)
        )

    def set(self, name: str, value: object) -> None:
        self.state.joinpath(name).write_text(value if isinstance(value, str) else json.dumps(value))

    def image(self, config: dict, **outside: object) -> None:
        self.set("inspect.json", [{"Config": config, **outside}])

    def calls(self) -> list[list[str]]:
        path = self.state / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def verbs(self) -> list[str]:
        return [c[0] for c in self.calls()]

    def check(self, plan: SmokePlan, name: str = "api"):
        return run_smoke(self.runtime, name, "localhost/api:dev", plan, self.said.append, f"[{name}]")


@pytest.fixture()
def fake(tmp_path, monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    state.begin_command()  # as every command starts: an earlier test's stop_all() is over
    return Fake(tmp_path)


@pytest.fixture()
def http_port():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture()
def refused_port():
    """A port this test holds bound but not listening: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def ok_command(code: int = 0) -> tuple[str, ...]:
    return (PY, "-c", f"raise SystemExit({code})")


def started_container(fake: Fake) -> str:
    run = next(c for c in fake.calls() if c[0] == "run")
    return run[run.index("--name") + 1]


def assert_removed(fake: Fake) -> None:
    container = started_container(fake)
    assert ["kill", container] in fake.calls() and ["rm", "-f", container] in fake.calls()
    assert container not in state.known_cleanups()


def test_config_reads_docker_and_podman_layouts(fake):
    fake.image({"Healthcheck": {"Test": ["CMD", "in-config"]}})
    assert fake.runtime.config("img")["Healthcheck"] == {"Test": ["CMD", "in-config"]}
    fake.image({"Env": ["A=1"]}, HealthCheck={"Test": ["CMD", "beside"]})
    assert fake.runtime.config("img") == {"Env": ["A=1"], "Healthcheck": {"Test": ["CMD", "beside"]}}
    fake.set("inspect.json", "")
    assert fake.runtime.config("img") == {"Healthcheck": None}


def test_a_healthy_image_passes_every_check_and_its_container_goes(fake, http_port):
    fake.image(
        {"ExposedPorts": {"8000/tcp": {}, "9000/tcp": {}}, "Healthcheck": {"Test": ["CMD", *ok_command()]}}
    )
    fake.set("ports.json", {"8000": http_port})
    plan = SmokePlan(
        (HttpCheck("/healthz", 8000, "k8s"), HttpCheck("/moved", 8000, "k8s")),
        command=ok_command(),
        healthcheck=Healthcheck(ok_command(9)),  # the image's own HEALTHCHECK wins
    )
    outcome = fake.check(plan)
    assert outcome.summary == (
        f"passed in {outcome.seconds:.1f}s: HEALTHCHECK, GET /healthz:8000, GET /moved:8000, "
        f"`{' '.join(ok_command())}`"
    )
    run = next(c for c in fake.calls() if c[0] == "run")
    container = started_container(fake)
    assert container.startswith("moltbuild-smoke-api-")
    assert run == ["run", "-d", "--name", container, "--rm", "-p", "127.0.0.1::8000", "-p", "127.0.0.1::9000",
                   "localhost/api:dev"]  # fmt: skip
    assert ["port", container, "9000/tcp"] in fake.calls()  # unpublished: the container port is used
    assert_removed(fake)
    assert fake.said == []


def test_nothing_to_check_starts_no_container(fake):
    fake.image({})
    outcome = fake.check(SmokePlan())
    assert outcome.summary == "nothing checked: no HEALTHCHECK, no probe, no smoke setting"
    assert fake.verbs() == ["image"]


def test_a_healthcheck_that_never_passes_fails_with_its_last_words_and_the_logs(fake):
    fake.image({})
    fake.set("logs", "".join(f"log {i}\n" for i in range(25)))
    failing = (PY, "-c", "import sys; print('trying'); print('db down', file=sys.stderr); sys.exit(1)")
    plan = SmokePlan(healthcheck=Healthcheck(failing, interval_s=0, timeout_s=0, retries=1))
    with pytest.raises(JobError, match=r"^smoke check failed: HEALTHCHECK never passed \(db down\)$"):
        fake.check(plan)
    assert fake.said == [f"[api]  | log {i}" for i in range(5, 25)]  # the last 20 lines
    assert_removed(fake)


def test_a_silent_failing_healthcheck_reports_its_exit_code(fake):
    fake.image({"Healthcheck": {"Test": ["CMD", *ok_command(4)], "Interval": 1, "Timeout": 1, "Retries": 1}})
    with pytest.raises(JobError, match=r"HEALTHCHECK never passed \(exit 4\)"):
        fake.check(SmokePlan())


def test_a_container_that_exits_at_start_fails_the_check(fake, http_port):
    fake.image({})
    fake.set("status", "exited 3")
    fake.set("logs", "boom: missing setting\n")
    fake.set("ports.json", {"8000": http_port})
    with pytest.raises(JobError, match=r"^smoke check failed: the container exited at start with code 3$"):
        fake.check(SmokePlan((HttpCheck("/healthz", 8000, "k8s"),)))
    assert fake.said == ["[api]  | boom: missing setting"]
    assert_removed(fake)


def test_a_path_the_app_does_not_serve_fails_at_once(fake, http_port):
    fake.image({})
    fake.set("ports.json", {"8000": http_port})
    origin = "k8s/api.yml Deployment api readinessProbe"
    start = time.monotonic()
    with pytest.raises(JobError) as info:
        fake.check(SmokePlan((HttpCheck("/nope", 8000, origin),)))
    assert info.value.message == f"smoke check failed: {origin}: GET /nope (container port 8000) answered 404"
    assert time.monotonic() - start < 2.5
    assert_removed(fake)


def test_a_port_nobody_answers_fails_when_the_cap_runs_out(fake, refused_port, monkeypatch):
    monkeypatch.setattr(smoke, "CAP_S", 0.5)
    fake.image({})
    fake.set("ports.json", {"8000": refused_port})
    with pytest.raises(
        JobError, match=r"GET /healthz \(container port 8000\) no answer \(ConnectionError\)$"
    ):
        fake.check(SmokePlan((HttpCheck("/healthz", 8000, "k8s"),)))
    assert_removed(fake)


def test_a_failing_smoke_command_fails_the_check(fake):
    fake.image({})
    with pytest.raises(
        JobError, match=rf"^smoke check failed: smoke command `{PY} -c raise SystemExit\(2\)` exited 2$"
    ):
        fake.check(SmokePlan(command=ok_command(2)))
    assert_removed(fake)


def test_a_runtime_error_becomes_a_job_error_that_says_the_check_could_not_run(fake):
    fake.set("no-image", "")
    with pytest.raises(
        JobError, match=r"^smoke check could not run: .* exit code 1: Error: no such image localhost/api:dev$"
    ):
        fake.check(SmokePlan(command=ok_command()))
    assert fake.verbs() == ["image"]
    (fake.state / "no-image").unlink()
    fake.image({})
    fake.set("run-fails", "")
    with pytest.raises(JobError, match=r"^smoke check could not run: .*: Error: cannot start$"):
        fake.check(SmokePlan(command=ok_command()))
    assert_removed(fake)  # a container that failed to start is still removed


def test_a_missing_runtime_binary_is_reported_as_a_job_error(fake, tmp_path):
    runtime = ContainerRuntime(Runner(out=fake.said.append), [str(tmp_path / "podman")])
    with pytest.raises(
        JobError, match=r"^smoke check could not run: `.*/podman` is not installed; fix: install it$"
    ):
        run_smoke(runtime, "api", "img", SmokePlan(command=("true",)), fake.said.append, "[api]")


def test_stop_all_interrupts_a_running_check_and_removes_its_container(fake):
    fake.image({})
    never = (PY, "-c", "raise SystemExit(1)")
    plan = SmokePlan(healthcheck=Healthcheck(never, interval_s=30, timeout_s=1, retries=3))
    errors: list[JobError] = []

    def check():
        try:
            fake.check(plan)
        except JobError as exc:
            errors.append(exc)

    thread = threading.Thread(target=check)
    thread.start()
    deadline = time.monotonic() + 5
    while "exec" not in fake.verbs() and time.monotonic() < deadline:
        time.sleep(0.02)
    stop_all()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert [e.message for e in errors] == ["smoke check interrupted"]
    container = started_container(fake)
    assert fake.calls().count(["rm", "-f", container]) == 2 and container not in state.known_cleanups()
