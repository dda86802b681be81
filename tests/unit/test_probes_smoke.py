"""Probes read from k8s manifests and Dockerfiles (no process), and the smoke check run against a
tiny podman stand-in: a python script in tmp_path whose "container" is the test machine and whose
published port is an HTTP server the test starts on an ephemeral port."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from moltbuild.dockerfile import Dockerfile
from moltbuild.errors import ConfigError, JobError
from moltbuild.flows import smoke as smoke_flow
from moltbuild.project import ImageConfig
from moltbuild.settings import Secret
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
from moltbuild.system import owners, state
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


# === smoke: how long to wait, what the container gets (pure) ====================================


def test_the_healthcheck_bound_is_dockers_own():
    # failures in the start period do not count, then `retries` checks `interval` apart, the last
    # one up to `timeout`
    assert smoke.healthcheck_bound(Healthcheck(("x",), 5, 2, 60, 3)) == 60 + 5 * 3 + 2
    assert smoke.healthcheck_bound(Healthcheck(("x",))) == 0 + 30 * 3 + 30  # Docker's defaults
    zero = Healthcheck(("x",), interval_s=0, timeout_s=0, retries=0)  # 0 means "the default"
    assert smoke.docker_healthcheck(zero) == Healthcheck(("x",), 30, 30, 0, 3)
    assert smoke.healthcheck_bound(zero) == 120


def test_the_probe_bound_is_what_kubernetes_allows():
    assert (
        smoke.probe_bound(HttpCheck("/", 80, "o", initial_delay_s=10, period_s=5, failure_threshold=6)) == 40
    )
    assert smoke.probe_bound(HttpCheck("/", 80, "o")) == 30  # periodSeconds 10 x failureThreshold 3
    assert smoke.probe_bound(HttpCheck("/", 80, "o", period_s=0, failure_threshold=0)) == 30


def test_the_cap_only_cuts_an_absurd_bound(monkeypatch):
    monkeypatch.setattr(smoke, "CAP_S", 600.0)
    assert smoke.wait_limit(130) == (130, False)
    assert smoke.wait_limit(900) == (600, True)


def test_the_env_file_carries_values_verbatim_and_refuses_what_it_cannot_carry():
    text, refused = smoke.env_file(
        [
            ("DATABASE_URL", Secret("postgres://u:pw@db/app")),
            ("SPACED", "  a = b  "),
            ("QUOTED", '"kept"'),
            ("EMPTY", ""),
            ("CERT", "-----BEGIN\nabc"),
            ("CR", "x\r"),
            ("1BAD", "x"),
            ("NUL", "a\0b"),
            ("HUGE", "x" * 65_536),
            ("BROKEN", "\udcff"),
            ("SPACED", "again"),  # later wins, in both runtimes
        ]
    )
    assert (
        text == 'DATABASE_URL=postgres://u:pw@db/app\nSPACED=  a = b  \nQUOTED="kept"\nEMPTY=\nSPACED=again\n'
    )
    assert refused == [
        "CERT (its value has a line break, which --env-file cannot pass)",
        "CR (its value has a line break, which --env-file cannot pass)",
        "1BAD (not a variable name --env-file can pass)",
        "NUL (its value has a NUL byte, which no environment can hold)",
        "HUGE (its value is 64 KiB or more, longer than --env-file reads)",
        "BROKEN (its value is not valid UTF-8)",
    ]
    assert smoke.env_file([]) == ("", [])


# === smoke: against a podman stand-in =============================================================

FAKE_PODMAN = Path(__file__).resolve().parents[1] / "support" / "fake_podman.py"
SERVE = [PY, "-c", "import time; time.sleep(120)"]  # a container that runs until it is killed
ULIMITS = ("--ulimit", "nofile=1024:1024")  # the kind of run flags buildah's runtime adds


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        code = {"/healthz": 200, "/moved": 302}.get(self.path, 404)
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class Fake:
    """The stand-in CLI (tests/support/fake_podman.py), its state directory and its calls."""

    def __init__(self, root: Path, run_flags: tuple[str, ...] = ULIMITS):
        self.state = root / "state"
        self.state.mkdir(exist_ok=True)
        self.said: list[str] = []
        self.runtime = ContainerRuntime(
            Runner(environ=os.environ, out=self.said.append),
            [PY, str(FAKE_PODMAN)],
            run_flags=run_flags,
            env={"FAKE_PODMAN_STATE": str(self.state)},
        )

    def set(self, name: str, value: object) -> None:
        self.state.joinpath(name).write_text(value if isinstance(value, str) else json.dumps(value))

    def image(self, config: dict, **outside: object) -> None:
        """The image `image inspect` describes; it runs SERVE unless `config` says otherwise."""
        self.set("inspect.json", [{"Config": {"Cmd": SERVE, **config}, **outside}])

    def calls(self) -> list[list[str]]:
        path = self.state / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def verbs(self) -> list[str]:
        return [c[0] for c in self.calls()]

    def received(self, container: str) -> list[dict[str, str]]:
        """The env files `run` read, as they were then."""
        return json.loads((self.state / "received" / f"{container}.json").read_text())

    def check(self, plan: SmokePlan, name: str = "api"):
        return run_smoke(self.runtime, name, "localhost/api:dev", plan, self.said.append, f"[{name}]")

    def close(self) -> None:
        """Whatever a failed test left running goes."""
        for pid in (self.state / "containers").glob("*/pid"):
            with contextlib.suppress(ProcessLookupError, ValueError, OSError):
                os.killpg(int(pid.read_text()), signal.SIGKILL)


@pytest.fixture()
def fake(tmp_path, monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    state.begin_command()  # as every command starts: an earlier test's stop_all() is over
    made = Fake(tmp_path)
    yield made
    made.close()


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
    assert not (fake.state / "containers" / container).exists()  # the stand-in removed it
    assert not [key for key in state.known_cleanups() if key.startswith(container)]


def test_config_reads_docker_and_podman_layouts(fake):
    fake.set("inspect.json", [{"Config": {"Healthcheck": {"Test": ["CMD", "in-config"]}}}])
    assert fake.runtime.config("img")["Healthcheck"] == {"Test": ["CMD", "in-config"]}
    fake.set("inspect.json", [{"Config": {"Env": ["A=1"]}, "HealthCheck": {"Test": ["CMD", "beside"]}}])
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
    assert re.fullmatch(
        rf"passed in {outcome.seconds:.1f}s: HEALTHCHECK \(healthy after \d+\.\ds\), GET /healthz:8000, "
        rf"GET /moved:8000, `{re.escape(' '.join(ok_command()))}`",
        outcome.summary,
    ), outcome.summary
    run = next(c for c in fake.calls() if c[0] == "run")
    container = started_container(fake)
    assert container.startswith("moltbuild-smoke-api-")
    publish = ["-p", "127.0.0.1::8000", "-p", "127.0.0.1::9000"]
    label = f"dev.moltbuild.smoke={os.getpid()}.{owners.token().split('.')[1]}"  # the owner: this process
    assert run == [
        "run",
        "-d",
        "--name",
        container,
        "--label",
        label,
        *ULIMITS,
        *publish,
        "localhost/api:dev",
    ]
    assert fake.received(container) == []  # no env: no file
    assert ["port", container, "8000/tcp"] in fake.calls()
    assert_removed(fake)
    assert fake.said == []


def test_nothing_to_check_starts_no_container(fake):
    fake.image({})
    outcome = fake.check(SmokePlan())
    assert outcome.summary == "nothing checked: no HEALTHCHECK, no probe, no smoke setting"
    assert fake.verbs() == ["image"]


SEE_ENV = (
    "import json, os, time\n"
    "open(os.environ['SEEN'], 'w').write(json.dumps(dict(os.environ)))\n"
    "time.sleep(120)\n"
)


def test_the_workloads_env_reaches_the_container_through_a_private_file_never_argv(fake, tmp_path):
    seen = tmp_path / "seen.json"
    secret = "postgres://app:Tr0ub4dor-3@db:5432/app"
    fake.image({"Cmd": [PY, "-c", SEE_ENV], "Env": ["FROM_IMAGE=1", "MODE=image"]})
    env = (
        ("DATABASE_URL", Secret(secret)),
        ("MODE", "canary-7"),
        ("GREETING", " hello = world "),
        ("SEEN", str(seen)),
    )
    # the exec session sees the container's env too: the HEALTHCHECK waits for the app's record
    ready = (PY, "-c", "import os, sys; sys.exit(0 if os.path.exists(os.environ['SEEN']) else 1)")
    plan = SmokePlan(
        healthcheck=Healthcheck(ready, interval_s=0.1, timeout_s=5, start_period_s=10),
        env=env,
        env_missing=("API_KEY (secret api/key: set [tool.moltbuild.images.api.smoke] env)",),
        workloads=("k8s/api.yml Deployment moltbook-api",),
    )
    outcome = fake.check(plan)
    container = started_container(fake)
    [got] = fake.received(container)
    assert got["text"] == f"DATABASE_URL={secret}\nMODE=canary-7\nGREETING= hello = world \nSEEN={seen}\n"
    assert (got["mode"], got["dir_mode"]) == ("0o600", "0o700")
    assert not Path(got["path"]).exists() and not Path(got["path"]).parent.exists()
    inside = json.loads(seen.read_text())
    assert inside["DATABASE_URL"] == secret and inside["GREETING"] == " hello = world "
    assert (inside["MODE"], inside["FROM_IMAGE"]) == ("canary-7", "1")  # the workload's value wins
    values = [secret, "canary-7", " hello = world "]
    assert not [arg for call in fake.calls() for arg in call if any(v in arg for v in values)]
    run = next(c for c in fake.calls() if c[0] == "run")
    assert run[run.index("--env-file") + 1] == got["path"]
    assert outcome.summary.endswith(
        "; env from k8s/api.yml Deployment moltbook-api: 4 variable(s), not given: API_KEY"
    )
    assert secret not in " ".join(fake.said) + outcome.summary
    assert_removed(fake)


def test_a_value_the_env_file_cannot_carry_is_left_out_with_a_note(fake):
    fake.image({"Cmd": [PY, "-c", "print('no CERT given', flush=True); raise SystemExit(2)"]})
    plan = SmokePlan(
        healthcheck=Healthcheck(ok_command(1), interval_s=30, retries=3),
        env=(("CERT", "-----BEGIN CERTIFICATE-----\nMIIB"), ("OK", "1")),
    )
    with pytest.raises(JobError) as info:
        fake.check(plan)
    assert info.value.message == (
        "smoke check failed: the container exited at start with code 2; last lines: no CERT given; "
        "it did not get: CERT (its value has a line break, which --env-file cannot pass)"
    )
    assert fake.said[0] == (
        "[api]smoke: note: not passing CERT (its value has a line break, which --env-file cannot pass)"
    )
    assert fake.received(started_container(fake))[0]["text"] == "OK=1\n"
    assert_removed(fake)


def test_an_error_line_written_in_two_pieces_is_quoted_whole(fake):
    # Python writes an exception's message and its newline apart; a busy machine's conmon reads
    # them apart (a k8s-file P record, then an empty F one), and podman 4.3's `logs --tail` lost
    # the P record's text: "it printed nothing" in 2 of 4 CI runs. The pause makes that split here.
    app = (
        "import sys, time\n"
        "sys.stderr.write('Error: boom, broken on purpose'); sys.stderr.flush()\n"
        "time.sleep(0.5)\n"
        "sys.stderr.write('\\n'); sys.exit(1)\n"
    )
    fake.image({"Cmd": [PY, "-c", app]})
    with pytest.raises(JobError) as info:
        fake.check(SmokePlan(healthcheck=Healthcheck(ok_command(1), interval_s=30, retries=3)))
    assert info.value.message == (
        "smoke check failed: the container exited at start with code 1: Error: boom, broken on purpose"
    )
    assert fake.said == ["[api]  | Error: boom, broken on purpose"]
    assert_removed(fake)


def test_a_container_that_exits_at_start_stops_the_check_at_once_and_says_why(fake):
    secret = "s3cr3t-t0ken-value"
    app = (
        "import sys\n"
        "print('starting api', flush=True)\n"
        f"print('config: token={secret}', flush=True)\n"
        "print('error: DATABASE_URL is not set', file=sys.stderr, flush=True)\n"
        "sys.exit(1)\n"
    )
    fake.image({"Cmd": [PY, "-c", app]})
    missing = "DATABASE_URL (secret db/url: set [tool.moltbuild.images.api.smoke] env)"
    plan = SmokePlan(
        # Docker would wait 30 + 30 x 3 + 30 = 150s for this HEALTHCHECK: an exit ends the wait
        healthcheck=Healthcheck(ok_command(1), interval_s=30, timeout_s=30, start_period_s=30, retries=3),
        env=(("TOKEN", Secret(secret)),),
        env_missing=(missing,),
    )
    start = time.monotonic()
    with pytest.raises(JobError) as info:
        fake.check(plan)
    assert time.monotonic() - start < 20  # not the 150 s Docker would wait
    assert info.value.message == (
        "smoke check failed: the container exited at start with code 1: error: DATABASE_URL is not set; "
        f"it did not get: {missing}"
    )
    assert fake.said == [
        "[api]  | starting api",
        "[api]  | config: token=****",
        "[api]  | error: DATABASE_URL is not set",
    ]
    assert secret in state.known_secrets()  # an error line the CLI prints is masked as well
    assert_removed(fake)


def test_an_exit_while_probes_wait_is_caught_too(fake, refused_port):
    fake.image({"Cmd": [PY, "-c", "import time; time.sleep(0.5); print('boom: missing setting')"]})
    fake.set("ports.json", {"8000": refused_port})
    start = time.monotonic()
    with pytest.raises(JobError) as info:
        fake.check(SmokePlan((HttpCheck("/healthz", 8000, "k8s"),)))  # Kubernetes would wait 30s
    assert time.monotonic() - start < 20
    assert info.value.message == (
        "smoke check failed: the container exited at start with code 0; last lines: boom: missing setting"
    )
    assert fake.said == ["[api]  | boom: missing setting"]
    assert_removed(fake)


def test_a_container_removed_under_the_check_is_named_not_waited_for(tmp_path):
    state.begin_command()
    fake = Fake(tmp_path, run_flags=("--rm",))  # gone as soon as it exits
    fake.image({"Cmd": [PY, "-c", "raise SystemExit(3)"]})
    plan = SmokePlan(healthcheck=Healthcheck(ok_command(1), interval_s=30, retries=3))
    start = time.monotonic()
    try:
        # gone before the first look, or seen exited and removed before its logs were read
        gone = r"is gone \(.*no such object|exited at start with code 3 \(removed since: its logs went"
        with pytest.raises(JobError, match=rf"^smoke check failed: the container ({gone})"):
            fake.check(plan)
    finally:
        fake.close()
    assert time.monotonic() - start < 20


def test_a_failing_healthcheck_names_its_command_and_last_output(fake):
    fake.image({})
    failing = [PY, "-c", "print('trying'); raise SystemExit('wget: server returned error: HTTP/1.1 404')"]
    plan = SmokePlan(healthcheck=Healthcheck(tuple(failing), interval_s=0.2, timeout_s=5, retries=3))
    start = time.monotonic()
    with pytest.raises(JobError) as info:
        fake.check(plan)
    assert info.value.message == (
        f"smoke check failed: HEALTHCHECK {json.dumps(failing, separators=(',', ':'))} failed 3 times "
        "(exit 1): wget: server returned error: HTTP/1.1 404"
    )
    assert 0.4 <= time.monotonic() - start < 20  # three failures 0.2s apart, not a flat wait
    assert fake.verbs().count("exec") >= 3
    assert_removed(fake)


def test_a_silent_failing_healthcheck_reports_its_exit_code(fake):
    fake.image({"Healthcheck": {"Test": ["CMD", *ok_command(4)], "Interval": 1, "Timeout": 1, "Retries": 1}})
    with pytest.raises(JobError, match=r"\] failed 1 time \(exit 4\)$"):
        fake.check(SmokePlan())


def test_healthcheck_failures_in_the_start_period_do_not_count(fake, tmp_path):
    flag = tmp_path / "up"
    fake.image({"Cmd": [PY, "-c", f"import time; time.sleep(0.6); open({str(flag)!r}, 'w'); time.sleep(60)"]})
    up = (PY, "-c", f"import os, sys; sys.exit(0 if os.path.exists({str(flag)!r}) else 1)")
    # one failure would be enough after the start period; within it, none counts
    outcome = fake.check(
        SmokePlan(healthcheck=Healthcheck(up, interval_s=0.01, start_period_s=10, retries=1))
    )
    healthy = float(re.search(r"healthy after (\d+\.\d)s", outcome.summary).group(1))
    assert 0.5 <= healthy < 9.5  # within the 10 s start period
    assert fake.verbs().count("exec") >= 2

    fake.state.joinpath("calls.jsonl").unlink()
    never = (PY, "-c", "raise SystemExit(1)")
    start = time.monotonic()
    with pytest.raises(JobError, match=r"failed 2 times \(exit 1\)$"):
        fake.check(SmokePlan(healthcheck=Healthcheck(never, interval_s=0.01, start_period_s=1, retries=2)))
    assert 1 <= time.monotonic() - start < 20
    assert fake.verbs().count("exec") > 2  # the checks within the start period ran, uncounted


def test_a_path_the_app_does_not_serve_fails_at_once(fake, http_port):
    fake.image({})
    fake.set("ports.json", {"8000": http_port})
    origin = "k8s/api.yml Deployment api readinessProbe"
    start = time.monotonic()
    with pytest.raises(JobError) as info:
        fake.check(SmokePlan((HttpCheck("/nope", 8000, origin),)))
    assert info.value.message == f"smoke check failed: {origin}: GET /nope (container port 8000) answered 404"
    assert time.monotonic() - start < 20  # not the probe's 30 s
    assert_removed(fake)


def test_a_port_nobody_answers_fails_when_the_probe_would(fake, refused_port):
    fake.image({})
    fake.set("ports.json", {"8000": refused_port})
    check = HttpCheck("/healthz", 8000, "k8s", initial_delay_s=0.2, period_s=0.3, failure_threshold=2)
    start = time.monotonic()
    with pytest.raises(JobError) as info:
        fake.check(SmokePlan((check,)))
    assert 0.8 <= time.monotonic() - start < 20
    assert info.value.message == (
        "smoke check failed: k8s: GET /healthz (container port 8000) no answer (ConnectionError) for 0.8s "
        "(initialDelaySeconds 0.2 + periodSeconds 0.3 x failureThreshold 2)"
    )
    assert_removed(fake)


def test_the_safety_cap_cuts_a_long_wait_and_says_so(fake, refused_port, monkeypatch):
    monkeypatch.setattr(smoke, "CAP_S", 0.5)
    fake.image({})
    fake.set("ports.json", {"8000": refused_port})
    start = time.monotonic()
    with pytest.raises(JobError) as info:
        fake.check(SmokePlan((HttpCheck("/healthz", 8000, "k8s"),)))
    assert time.monotonic() - start < 20
    assert info.value.message.endswith(
        "GET /healthz (container port 8000) no answer (ConnectionError); "
        "stopped at the 0.5s safety cap (GET /healthz allows 30s)"
    )
    assert fake.said[0] == "[api]smoke: note: GET /healthz allows 30s; waiting at most 0.5s (safety cap)"
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
        JobError,
        match=r"^smoke check could not run: .* exit code 125: Error: inspecting object: localhost/api:dev: "
        r"image not known$",
    ):
        fake.check(SmokePlan(command=ok_command()))
    assert fake.verbs() == ["image"]
    (fake.state / "no-image").unlink()
    fake.image({})
    fake.set("run-fails", "")
    with pytest.raises(JobError, match=r"^smoke check could not run: .*: Error: cannot start$"):
        fake.check(SmokePlan(command=ok_command(), env=(("A", "1"),)))
    assert_removed(fake)  # a container that failed to start is still removed
    assert not Path(fake.received(started_container(fake))[0]["path"]).parent.exists()  # and its env


def test_a_missing_runtime_binary_is_reported_as_a_job_error(fake, tmp_path):
    runtime = ContainerRuntime(Runner(environ=os.environ, out=fake.said.append), [str(tmp_path / "podman")])
    with pytest.raises(
        JobError, match=r"^smoke check could not run: `.*/podman` is not installed; fix: install it$"
    ):
        run_smoke(runtime, "api", "img", SmokePlan(command=("true",)), fake.said.append, "[api]")


def checked_in_thread(fake: Fake, plan: SmokePlan) -> tuple[threading.Thread, list[JobError]]:
    errors: list[JobError] = []

    def check():
        try:
            fake.check(plan)
        except JobError as exc:
            errors.append(exc)

    thread = threading.Thread(target=check)
    thread.start()
    return thread, errors


def wait_for(condition, seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert condition()


def test_stop_all_interrupts_a_running_check_and_removes_its_container(fake):
    fake.image({})
    never = (PY, "-c", "raise SystemExit(1)")
    thread, errors = checked_in_thread(
        fake, SmokePlan(healthcheck=Healthcheck(never, interval_s=30, timeout_s=1, retries=3))
    )
    wait_for(lambda: "exec" in fake.verbs())
    stop_all()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert [e.message for e in errors] == ["smoke check interrupted"]
    container = started_container(fake)
    assert fake.calls().count(["rm", "-f", container]) == 2 and container not in state.known_cleanups()


def test_stop_all_removes_the_env_file_even_while_run_holds_it(fake):
    fake.image({})
    fake.set("run-delay", "1")
    plan = SmokePlan(healthcheck=Healthcheck(ok_command()), env=(("TOKEN", Secret("tok-123")),))
    thread, errors = checked_in_thread(fake, plan)
    wait_for(lambda: (fake.state / "received").is_dir() and any((fake.state / "received").iterdir()))
    [got] = fake.received(started_container(fake))
    assert Path(got["path"]).exists()
    stop_all()
    assert not Path(got["path"]).parent.exists()  # at once, not when `run` returns
    thread.join(timeout=5)
    assert [e.message for e in errors] == ["smoke check interrupted"]
    assert_removed(fake)


def test_invoke_smoke_names_the_image_in_its_error_line(fake, tmp_path):
    df = dockerfile(tmp_path, 'FROM x\nHEALTHCHECK --interval=30s CMD ["false"]\n')
    fake.image({"Cmd": [PY, "-c", "raise SystemExit(5)"]})
    cfg = ImageConfig("api", "api", tmp_path, df, manifest_name=API)
    backend = SimpleNamespace(runner=fake.runtime.runner, runtime=lambda: fake.runtime)
    with pytest.raises(JobError) as info:
        smoke_flow._check_all(backend, [(cfg, "localhost/api:dev", None)], None, tmp_path)
    assert info.value.message == (
        "api: smoke check failed: the container exited at start with code 5; it printed nothing"
    )
