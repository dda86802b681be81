"""The release check never silently skips a push: no container runtime refuses the push before
anything is built (unless the check is turned off, which the report says), and an OCI runtime
that cannot start a container here is replaced once by the other one podman has. A scripted
runner stands in for podman; no process is started."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from moltbuild.backends.contract import JobLog
from moltbuild.errors import CommandError, ConfigError
from moltbuild.settings import load_settings
from moltbuild.smoke import oci
from moltbuild.smoke.probes import SmokePlan
from moltbuild.smoke.run import ContainerRuntime, run_smoke
from moltbuild.system.processes import Result
from tests.unit.test_push_path import builder, plan

HYBRID = "Error: OCI runtime error: crun: cgroups in hybrid mode not supported"


class ScriptedPodman:
    """Answers podman's verbs as a host where crun cannot start containers and runc can."""

    def __init__(self, fail: str = HYBRID, default: str = "crun"):
        self.calls: list[list[str]] = []
        self.fail, self.default = fail, default

    def run(self, argv, *, env=None, check=True, timeout=60, mutates=True):
        self.calls.append(list(argv))
        args = argv[argv.index("runc") + 1 :] if "--runtime" in argv else argv[1:]
        res = self.answer(args, crun="--runtime" not in argv and self.default == "crun")
        if check and not res.ok:
            raise CommandError(argv, res.returncode, res.stderr)
        return res

    def answer(self, args: list[str], *, crun: bool) -> Result:
        verb = args[0]
        if verb == "run" and crun:
            return Result(args, 126, stderr=self.fail)
        if verb == "image":
            return Result(args, 0, stdout="[{}]")
        if verb == "inspect":
            return Result(args, 0, stdout="running 0")
        if verb == "info":
            return Result(args, 0, stdout=f"{self.default}\n")
        return Result(args, 0)


def podman(runner: ScriptedPodman) -> ContainerRuntime:
    return ContainerRuntime(runner, ["podman"])  # type: ignore[arg-type]


def found(*tools: str):
    return lambda tool: f"/usr/bin/{tool}" if tool in tools else None


def test_a_push_without_a_runtime_is_refused_naming_both_ways_out(tmp_path):
    images = [replace(plan("r.example"), smoke=SmokePlan())]
    with pytest.raises(ConfigError) as err:
        oci.require_runtime("podman", images, which=found())
    message = err.value.message
    assert "\n" not in message and "podman is not installed (api)" in message
    assert "`invoke setup`" in message and "--no-smoke" in message and "MOLTBUILD_SMOKE=off" in message
    oci.require_runtime("podman", [replace(images[0], smoke=None)], which=found())  # turned off: fine
    oci.require_runtime("podman", images, which=found("podman"))


def test_the_report_says_which_switch_turned_the_check_off(tmp_path):
    fake = SimpleNamespace(host="r.example")  # the registry is not asked
    image = plan(fake.host)  # smoke None: the check is off
    assert (
        builder(tmp_path, fake).smoke(image, "sha256:" + "e" * 64, JobLog("[api] ")) == "skipped: --no-smoke"
    )
    off = builder(tmp_path / "off", fake)
    off.settings = load_settings(tmp_path, environ={"MOLTBUILD_SMOKE": "off"}, tool_config={})
    assert off.smoke(image, "sha256:" + "e" * 64, JobLog("[api] ")) == "skipped: MOLTBUILD_SMOKE=off"
    assert load_settings(tmp_path, environ={}, tool_config={}).flag("MOLTBUILD_SMOKE") is True


def test_a_value_that_is_not_on_or_off_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"MOLTBUILD_SMOKE='maybe'.* must be one of 1/true"):
        load_settings(tmp_path, environ={"MOLTBUILD_SMOKE": "maybe"}, tool_config={})


def test_crun_on_hybrid_cgroups_falls_back_to_runc_once_for_the_rest_of_the_run(monkeypatch):
    monkeypatch.setattr(oci.shutil, "which", found("podman", "runc", "crun"))
    script, said = ScriptedPodman(), []
    runtime = podman(script)
    smoke = SmokePlan(command=("true",))
    outcome = run_smoke(runtime, "api", "localhost/api:dev", smoke, said.append, "[api] ")
    assert outcome.summary.startswith("passed in ")
    runs = [c for c in script.calls if "run" in c]
    assert [c[:3] for c in runs] == [["podman", "run", "-d"], ["podman", "--runtime", "runc"]]
    container = runs[0][runs[0].index("--name") + 1]
    assert ["podman", "rm", "-f", container] in script.calls  # the created one goes before the retry
    assert said[0] == "[api] smoke: note: " + HYBRID + "; trying runc"
    assert "runc starts containers here" in said[1]
    run_smoke(runtime, "web", "localhost/web:dev", smoke, said.append, "[web] ")
    later = [c for c in script.calls if "run" in c][2:]
    assert [c[:3] for c in later] == [["podman", "--runtime", "runc"]]  # no second crun attempt


def test_an_image_whose_command_is_missing_is_not_blamed_on_the_runtime(monkeypatch):
    monkeypatch.setattr(oci.shutil, "which", found("podman", "runc"))
    app = "Error: OCI runtime error: crun: executable file `/app/start` not found in $PATH"
    with pytest.raises(Exception, match="not found"):
        run_smoke(podman(ScriptedPodman(app)), "api", "img", SmokePlan(command=("true",)), print, "")


def test_without_the_other_runtime_the_first_error_stands(monkeypatch):
    monkeypatch.setattr(oci.shutil, "which", found("podman"))
    script = ScriptedPodman()
    with pytest.raises(Exception, match="hybrid mode not supported"):
        run_smoke(podman(script), "api", "img", SmokePlan(command=("true",)), print, "")
    assert not [c for c in script.calls if "--runtime" in c]


def test_doctor_says_which_runtime_starts_the_smoke_containers(tmp_path: Path):
    hybrid = tmp_path / "cgroup"
    (hybrid / "unified").mkdir(parents=True)
    script = ScriptedPodman()
    line = oci.doctor_line(podman(script), which=found("podman", "runc"), cgroups=hybrid)
    assert (
        line == "podman's crun cannot start containers here (hybrid cgroups): the check uses --runtime runc"
    )
    assert "install runc" in oci.doctor_line(podman(script), which=found("podman"), cgroups=hybrid)
    (hybrid / "cgroup.controllers").write_text("cpu")  # pure v2: crun works
    assert oci.doctor_line(podman(script), which=found("podman"), cgroups=hybrid) == (
        "podman runs the smoke containers with crun"
    )
    assert "not installed" in oci.doctor_line(podman(script), which=found())


# === what the check says: optional secrets, a crash at start =====================================

OPTIONAL = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  template:
    spec:
      containers:
        - name: api
          image: ghcr.io/acme/api:1
          envFrom: [{secretRef: {name: extra, optional: true}}]
          env:
            - {name: MODE, value: prod}
            - {name: SENTRY_DSN, valueFrom: {secretKeyRef: {name: sentry, key: dsn, optional: true}}}
            - {name: DB_URL, valueFrom: {secretKeyRef: {name: db, key: url}}}
"""


def test_optional_secrets_are_reported_as_optional_and_the_pass_line_has_no_stray_colons(tmp_path):
    from moltbuild.smoke.probes import smoke_plan

    (tmp_path / "k8s").mkdir()
    (tmp_path / "k8s" / "api.yml").write_text(OPTIONAL)
    smoke = smoke_plan(tmp_path, "ghcr.io/acme/api", None, "[tool.moltbuild.images.api]")
    assert [m.split(":")[0] for m in smoke.env_missing] == ["DB_URL"]
    assert "give it" in smoke.env_missing[0]
    assert [m.split(":")[0] for m in smoke.env_optional] == ["envFrom secret extra", "SENTRY_DSN"]
    assert not [m for m in smoke.env_optional if "give it" in m]
    plan_ = replace(smoke, command=("true",))
    summary = run_smoke(podman(ScriptedPodman(default="runc")), "api", "img", plan_, print, "").summary
    assert summary.endswith(
        "; env from k8s/api.yml Deployment api: 1 variable(s), not given: DB_URL, "
        "optional, not given: envFrom secret extra, SENTRY_DSN"
    )


NODE_CRASH = """\
node:internal/modules/cjs/loader:1080
  throw err;
  ^

Error: Cannot find module 'express'
Require stack:
- /app/server.js
    at Module._resolveFilename (node:internal/modules/cjs/loader:1077:15)
    at Module._load (node:internal/modules/cjs/loader:922:27)
    at Object.<anonymous> (/app/server.js:1:17) {
  code: 'MODULE_NOT_FOUND',
  requireStack: [ '/app/server.js' ]
}

Node.js v18.19.0
"""

PYTHON_CRASH = """\
Traceback (most recent call last):
  File "/app/main.py", line 3, in <module>
    settings = load()
  File "/app/settings.py", line 9, in load
    return os.environ["DATABASE_URL"]
KeyError: 'DATABASE_URL'
"""


@pytest.mark.parametrize(
    "logs, line",
    [(NODE_CRASH, "Error: Cannot find module 'express'"), (PYTHON_CRASH, "KeyError: 'DATABASE_URL'")],
)
def test_a_crash_at_start_is_summarised_by_its_error_line(logs, line):
    class Crashed(ScriptedPodman):
        def answer(self, args, *, crun):
            if args[0] == "inspect":
                return Result(args, 0, stdout="exited 1")
            if args[0] == "logs":
                return Result(args, 0, stdout=logs)
            return super().answer(args, crun=crun)

    with pytest.raises(Exception) as err:
        run_smoke(podman(Crashed(default="runc")), "api", "img", SmokePlan(command=("true",)), print, "")
    assert err.value.message == f"smoke check failed: the container exited at start with code 1: {line}"
