"""Release safety: start a built image before it is pushed, wait for its HEALTHCHECK, and ask
every probe path its Deployments use. A failure stops the push; the container always goes."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import requests

from moltbuild.errors import CommandError, JobError, MoltbuildError
from moltbuild.smoke.probes import Healthcheck, SmokePlan
from moltbuild.system import state
from moltbuild.system.processes import Runner

CAP_S = 120.0  # no smoke check waits longer than this, whatever the HEALTHCHECK says
_NS = 1e9


def stop_all() -> None:
    """Ctrl-C / SIGTERM: end every running check and remove its container now."""
    state.interrupt()
    state.run_cleanups()


@dataclass(frozen=True)
class SmokeOutcome:
    summary: str  # one line for the report: "passed in 1.2s: HEALTHCHECK, GET /healthz:8000"
    seconds: float


class ContainerRuntime:
    """podman (on buildah's storage) or docker: the same CLI verbs, through the runner."""

    def __init__(
        self, runner: Runner, argv: list[str], *, run_flags: tuple[str, ...] = (), env: dict | None = None
    ):
        self.runner, self.argv, self.run_flags, self.env = runner, argv, run_flags, env or {}

    def __call__(self, *args: str, check: bool = True, timeout: float = 60, mutates: bool = True) -> Any:
        return self.runner.run(
            [*self.argv, *args], env=self.env, check=check, timeout=timeout, mutates=mutates
        )

    def remove(self, container: str) -> None:
        """Kill, then remove: an app that ignores SIGTERM as PID 1 (busybox httpd) would hold
        `rm -f` for its 10 s stop timeout."""
        self("kill", container, check=False, timeout=60)
        self("rm", "-f", container, check=False, timeout=60)

    def config(self, image: str) -> dict[str, Any]:
        out = self("image", "inspect", image, mutates=False).stdout
        data = json.loads(out or "[]")
        info = data[0] if isinstance(data, list) and data else {}
        config = dict(info.get("Config") or {})
        # podman reports a Docker-format HEALTHCHECK beside the config, docker inside it
        config.setdefault("Healthcheck", info.get("HealthCheck") or info.get("Healthcheck"))
        return config


def healthcheck_of(config: dict[str, Any]) -> Healthcheck | None:
    hc = config.get("Healthcheck") or {}
    test = list(hc.get("Test") or [])
    if not test or test[0] == "NONE":
        return None
    argv = ("/bin/sh", "-c", test[1]) if test[0] == "CMD-SHELL" else tuple(test[1:])
    return Healthcheck(
        argv,
        (hc.get("Interval") or 30 * _NS) / _NS,
        (hc.get("Timeout") or 30 * _NS) / _NS,
        (hc.get("StartPeriod") or 0) / _NS,
        int(hc.get("Retries") or 3),
    )


def exposed_ports(config: dict[str, Any]) -> set[int]:
    return {int(p.split("/")[0]) for p in (config.get("ExposedPorts") or {}) if p.split("/")[0].isdigit()}


class SmokeCheck:
    def __init__(self, runtime: ContainerRuntime, name: str, plan: SmokePlan, say: Any, prefix: str):
        self.rt, self.name, self.plan, self.say, self.prefix = runtime, name, plan, say, prefix

    def run(self, image: str) -> SmokeOutcome:
        start = time.monotonic()
        config = self.rt.config(image)
        health = healthcheck_of(config) or self.plan.healthcheck
        ports = sorted(set(self.plan.ports) | exposed_ports(config))
        checked = (["HEALTHCHECK"] if health else []) + [f"GET {c.path}:{c.port}" for c in self.plan.http]
        checked += [f"`{' '.join(self.plan.command)}`"] if self.plan.command else []
        if not checked:
            return SmokeOutcome("nothing checked: no HEALTHCHECK, no probe, no smoke setting", 0.0)
        container = f"moltbuild-smoke-{self.name}-{secrets.token_hex(4)}"
        publish = [a for p in ports for a in ("-p", f"127.0.0.1::{p}")]
        state.on_interrupt(container, lambda: self.rt.remove(container))
        try:
            self.rt("run", "-d", "--name", container, *self.rt.run_flags, *publish, image, timeout=120)
            deadline = time.monotonic() + CAP_S
            hosts = {p: self._host_port(container, p) for p in ports}
            if health:
                self._wait_healthy(container, health, deadline)
            for check in self.plan.http:
                self._probe(container, check.path, check.port, hosts[check.port], check.origin, deadline)
            if self.plan.command:
                res = self.rt("exec", container, *self.plan.command, check=False, timeout=60)
                if not res.ok:
                    self._fail(
                        container, f"smoke command `{' '.join(self.plan.command)}` exited {res.returncode}"
                    )
        finally:
            self.rt.remove(container)
            state.done(container)
        seconds = time.monotonic() - start
        return SmokeOutcome(f"passed in {seconds:.1f}s: {', '.join(checked)}", seconds)

    def _host_port(self, container: str, port: int) -> int:
        out = self.rt("port", container, f"{port}/tcp", mutates=False).stdout.strip().splitlines()
        return int(out[0].rsplit(":", 1)[1]) if out else port

    def _state(self, container: str) -> tuple[str, int]:
        res = self.rt(
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}}",
            container,
            check=False,
            mutates=False,
        )
        status, _, code = res.stdout.strip().partition(" ")
        return status, int(code) if code.lstrip("-").isdigit() else 0

    def _alive(self, container: str) -> None:
        if state.interrupted():
            raise JobError("smoke check interrupted")
        status, code = self._state(container)
        if status in ("exited", "stopped", "dead"):
            self._fail(container, f"the container exited at start with code {code}")

    def _fail(self, container: str, reason: str) -> None:
        logs = self.rt("logs", "--tail", "20", container, check=False, timeout=30, mutates=False)
        for line in (logs.stdout + logs.stderr).strip().splitlines()[-20:]:
            self.say(f"{self.prefix}  | {line}")
        raise JobError(f"smoke check failed: {reason}")

    def _wait_healthy(self, container: str, hc: Healthcheck, deadline: float) -> None:
        # Poll faster than the interval: a healthy image passes at its first good answer.
        until = min(
            deadline, time.monotonic() + hc.start_period_s + (hc.interval_s + hc.timeout_s) * hc.retries
        )
        last = ""
        while True:
            self._alive(container)
            try:
                res = self.rt("exec", container, *hc.argv, check=False, timeout=hc.timeout_s + 5)
                if res.ok:
                    return
                last = (res.stderr or res.stdout).strip().splitlines()[-1:] or [f"exit {res.returncode}"]
                last = last[0][:200]
            except CommandError as exc:
                last = exc.message
            if time.monotonic() >= until:
                self._fail(container, f"HEALTHCHECK never passed ({last})")
            time.sleep(0.25)

    def _probe(
        self, container: str, path: str, port: int, host_port: int, origin: str, deadline: float
    ) -> None:
        url = f"http://127.0.0.1:{host_port}{path}"
        last = ""
        while True:
            self._alive(container)
            try:
                resp = requests.get(url, timeout=3, allow_redirects=False)
                if 200 <= resp.status_code < 400:
                    return
                last = f"answered {resp.status_code}"
                if resp.status_code == 404:  # a path the app does not serve will not appear later
                    break
            except requests.RequestException as exc:
                last = f"no answer ({type(exc).__name__})"
            if time.monotonic() >= deadline:
                break
            time.sleep(0.25)
        self._fail(container, f"{origin}: GET {path} (container port {port}) {last}")


def run_smoke(
    runtime: ContainerRuntime, name: str, image: str, plan: SmokePlan, say: Any, prefix: str
) -> SmokeOutcome:
    """Check `image` (ID or reference); raises JobError with the reason when it fails."""
    try:
        return SmokeCheck(runtime, name, plan, say, prefix).run(image)
    except JobError:
        raise
    except MoltbuildError as exc:
        raise JobError(f"smoke check could not run: {exc.message}") from None
