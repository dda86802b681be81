"""Release safety: start a built image before it is pushed, with the settings its workloads give
it, wait for its HEALTHCHECK as Docker would and ask every probe path its Deployments use as
Kubernetes would. A failure stops the push and says why in one line; the container always goes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, NoReturn

import requests

from moltbuild.errors import CommandError, JobError, MoltbuildError
from moltbuild.settings import MASK, Secret
from moltbuild.smoke import oci
from moltbuild.smoke.probes import Healthcheck, HttpCheck, SmokePlan
from moltbuild.smoke.runtime import SMOKE_LABEL, ContainerRuntime, env_file, exposed_ports, healthcheck_of
from moltbuild.system import owners, state
from moltbuild.system.processes import Result

__all__ = [
    "SMOKE_LABEL",
    "ContainerRuntime",
    "env_file",
    "exposed_ports",
    "healthcheck_of",
    "run_smoke",
    "stop_all",
]

# Each wait follows the image's own settings (healthcheck_bound, probe_bound). This cap is only a
# safety net against absurd settings: no wait runs longer from the container's start, and a note
# and the failure line say so whenever it cuts one short.
CAP_S = 600.0
POLL_S = 0.25  # faster than any interval: a healthy image passes at its first good answer
_TAIL = 20  # container log lines shown when a check fails
_SEARCHED = 200  # ... and searched for the error line (a Java stack runs long after it)
# An unindented line naming the error: "Error: ...", "KeyError: ...", "java.lang.X: ...",
# "Exception in thread ...", "panic: ...", "fatal: ..." (stack frames are indented).
_ERROR_LINE = re.compile(
    r"(?:Uncaught )?(?:[\w.$]*(?:Error|Exception)\b.*|Exception in thread .*|Caused by: .*|"
    r"(?:panic|fatal|FATAL|ERROR|error)(?:\[\w+\])?: .*)$"
)
_QUOTED = 3  # of which the failure line quotes the last few
_WIDTH = 200  # characters kept of one quoted line


def stop_all() -> None:
    """Ctrl-C / SIGTERM: end every running check and remove its container now."""
    state.interrupt()
    state.run_cleanups()


@dataclass(frozen=True)
class SmokeOutcome:
    summary: str  # one line for the report: "passed in 1.2s: HEALTHCHECK (healthy after 0.4s), ..."
    seconds: float


# === how long to wait: the image's own settings ================================================


def docker_healthcheck(hc: Healthcheck) -> Healthcheck:
    """As the Docker daemon runs it: a zero interval, timeout or retries means its default."""
    return replace(
        hc, interval_s=hc.interval_s or 30.0, timeout_s=hc.timeout_s or 30.0, retries=hc.retries or 3
    )


def healthcheck_bound(hc: Healthcheck) -> float:
    """How long Docker takes at most to call the container unhealthy: failures in the start
    period do not count, then `retries` failed checks `interval` apart, the last up to `timeout`."""
    hc = docker_healthcheck(hc)
    return hc.start_period_s + hc.interval_s * hc.retries + hc.timeout_s


def probe_bound(check: HttpCheck) -> float:
    """How long Kubernetes lets the probe fail from the container's start (its defaults for 0)."""
    return check.initial_delay_s + (check.period_s or 10.0) * (check.failure_threshold or 3)


def wait_limit(bound: float) -> tuple[float, bool]:
    """The seconds to wait from the container's start, and whether the safety cap cut `bound`."""
    return min(bound, CAP_S), bound > CAP_S


def _secret_values(env: Iterable[tuple[str, str | Secret]]) -> list[str]:
    found = {v.reveal() for _, v in env if isinstance(v, Secret) and v.reveal()}
    return sorted(found, key=len, reverse=True)


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _WIDTH else text[: _WIDTH - 3] + "..."


def _output(res: Result) -> str:
    """The last words of a failed command: its stderr's last lines, else its stdout's."""
    lines = [ln for ln in (res.stderr.strip() or res.stdout.strip()).splitlines() if ln.strip()]
    return " / ".join(_clip(ln) for ln in lines[-_QUOTED:])


# === the check ===================================================================================


class SmokeCheck:
    def __init__(self, runtime: ContainerRuntime, name: str, plan: SmokePlan, say: Any, prefix: str):
        self.rt, self.name, self.plan, self.say, self.prefix = runtime, name, plan, say, prefix
        self.hidden = _secret_values(plan.env)
        state.remember_secrets(self.hidden)  # an error line that reaches the CLI is masked too
        self.missing = list(plan.env_missing)  # "NAME: why", "NAME (why)": what the container does not get
        self.optional = list(plan.env_optional)  # the same, for secrets marked optional
        self.given = 0

    def run(self, image: str) -> SmokeOutcome:
        start = time.monotonic()
        config = self.rt.config(image)
        health = healthcheck_of(config) or self.plan.healthcheck
        checked = (["HEALTHCHECK"] if health else []) + [f"GET {c.path}:{c.port}" for c in self.plan.http]
        checked += [f"`{' '.join(self.plan.command)}`"] if self.plan.command else []
        if not checked:
            return SmokeOutcome("nothing checked: no HEALTHCHECK, no probe, no smoke setting", 0.0)
        container = f"moltbuild-smoke-{self.name}-{secrets.token_hex(4)}"
        state.on_interrupt(container, lambda: self.rt.remove(container))
        try:
            healthy = self._check(container, image, config, health)
        finally:
            self.rt.remove(container)
            state.done(container)
        if healthy is not None:
            checked[0] = f"HEALTHCHECK (healthy after {healthy:.1f}s)"
        seconds = time.monotonic() - start
        return SmokeOutcome(f"passed in {seconds:.1f}s: {', '.join(checked)}{self._env_note()}", seconds)

    def _check(
        self, container: str, image: str, config: dict[str, Any], health: Healthcheck | None
    ) -> float | None:
        """Start the container and run every check; the seconds it took to become healthy."""
        ports = sorted(set(self.plan.ports) | exposed_ports(config))
        publish = [a for p in ports for a in ("-p", f"127.0.0.1::{p}")]
        started = self.launch(container, image, publish)
        healthy = self.wait_ready(container, health, started)
        if self.plan.command:
            self._command(container)
        return healthy

    def launch(self, container: str, image: str, publish: list[str]) -> float:
        """Start IMAGE detached as CONTAINER with the workload's env (an --env-file), the smoke
        label (a later run removes it once this process is gone) and PUBLISH (`-p` arguments);
        returns when it started (monotonic). `invoke dev` runs its containers this way too."""
        with self._env_file(container) as env_args:
            label = f"{SMOKE_LABEL}={owners.token()}"
            self._start(container, ["-d", "--name", container, "--label", label, *env_args], publish, image)
        return time.monotonic()

    def wait_ready(
        self,
        container: str,
        health: Healthcheck | None,
        started: float,
        hosts: dict[int, int] | None = None,
    ) -> float | None:
        """Wait for the HEALTHCHECK, then ask every probe path; JobError (after showing the last
        log lines through `say`) when the container fails. The seconds it took to become healthy.
        `hosts`: container port -> host port when the caller published fixed ones."""
        hosts = hosts or {p: self._host_port(container, p) for p in self.plan.ports}
        healthy = self._wait_healthy(container, health, started) if health else None
        for check in self.plan.http:
            self._probe(container, check, hosts[check.port], started)
        return healthy

    def _start(self, container: str, args: list[str], publish: list[str], image: str) -> None:
        """`run` the container; when the OCI runtime cannot start one here, once with the other
        one podman has, which this runtime then keeps for the rest of the run."""
        argv = ["run", *args, *self.rt.run_flags, *publish, image]
        try:
            self.rt(*argv, timeout=120)
        except CommandError as exc:
            other = oci.fallback(self.rt, exc)
            if not other:
                raise
            self.rt.remove(container)  # podman created it before the runtime failed
            self.say(f"{self.prefix}smoke: note: {_clip(exc.tail.strip().splitlines()[-1])}; trying {other}")
            self.rt.use_oci(other)
            self.rt(*argv, timeout=120)
            self.say(
                f"{self.prefix}smoke: note: {other} starts containers here; used for the rest of the run"
            )

    @contextlib.contextmanager
    def _env_file(self, container: str) -> Iterator[list[str]]:
        """The workload's settings as an --env-file, 0600 in a private directory that goes once
        the runtime has read it (at `run`), on failure and on Ctrl-C too. Never `-e KEY=VALUE`:
        argv is visible to every user of the machine."""
        text, refused = env_file(self.plan.env)
        for note in refused:
            self.say(f"{self.prefix}smoke: note: not passing {note}")
        self.missing += refused
        self.given = len(self.plan.env) - len(refused)
        if not text:
            yield []
            return
        folder = owners.make_private_dir()  # 0700: this user's only
        key = f"{container} env-file"
        state.on_interrupt(key, lambda: shutil.rmtree(folder, ignore_errors=True))
        try:
            path = os.path.join(folder, "env")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
                out.write(text)
            yield ["--env-file", path]
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            state.done(key)

    def _env_note(self) -> str:
        if not (self.plan.env or self.missing or self.optional):
            return ""
        source = f" from {', '.join(self.plan.workloads)}" if self.plan.workloads else ""
        note = f"; env{source}: {self.given} variable(s)"
        note += f", not given: {_names(self.missing)}" if self.missing else ""
        return note + (f", optional, not given: {_names(self.optional)}" if self.optional else "")

    def _mask(self, text: str) -> str:
        for value in self.hidden:
            text = text.replace(value, MASK)
        return text

    def _host_port(self, container: str, port: int) -> int:
        res = self.rt("port", container, f"{port}/tcp", check=False, mutates=False)
        if not res.ok:
            self._alive(container)  # an exited container publishes nothing: say that, not this
            raise CommandError(res.argv, res.returncode, res.stderr or res.stdout)
        out = res.stdout.strip().splitlines()
        return int(out[0].rsplit(":", 1)[1]) if out else port

    def _alive(self, container: str) -> None:
        """Fail at once when the container is no longer running (or the command was interrupted)."""
        if state.interrupted():
            raise JobError("smoke check interrupted")
        res = self.rt(
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}}",
            container,
            check=False,
            mutates=False,
        )
        status, _, code = res.stdout.strip().partition(" ")
        if not res.ok:
            self._fail(
                container, f"the container is gone ({_output(res) or f'inspect exit {res.returncode}'})"
            )
        if status in ("exited", "stopped", "dead"):
            self._fail(container, f"the container exited at start with code {code or '?'}", quote=True)

    def _fail(self, container: str, reason: str, *, quote: bool = False) -> NoReturn:
        """Show the container's last log lines and raise the one-line reason (masked)."""
        read, lines = self._last_lines(container)
        for line in lines[-_TAIL:]:
            self.say(f"{self.prefix}  | {line}")
        if quote:
            reason += _crash_summary(lines) if read else " (removed since: its logs went with it)"
        if self.missing:
            reason += f"; it did not get: {', '.join(self.missing)}"
        raise JobError(f"smoke check failed: {self._mask(reason)}")

    def _last_lines(self, container: str) -> tuple[bool, list[str]]:
        """Whether the log could be read, and its last lines (masked). A failed `logs` is the
        runtime's complaint (a --rm container removed since), not the app's."""
        logs = self.rt.logs(container)
        if not logs.ok:
            return False, []
        return True, [self._mask(ln) for ln in (logs.stdout + logs.stderr).strip().splitlines()][-_SEARCHED:]

    def _until(self, started: float, bound: float, what: str) -> tuple[float, str]:
        """When to stop waiting, and what the failure line adds when the safety cap cut the wait."""
        limit, capped = wait_limit(bound)
        if not capped:
            return started + limit, ""
        self.say(
            f"{self.prefix}smoke: note: {what} allows {bound:.0f}s; waiting at most {CAP_S:g}s (safety cap)"
        )
        return started + limit, f"; stopped at the {CAP_S:g}s safety cap ({what} allows {bound:.0f}s)"

    def _wait_healthy(self, container: str, hc: Healthcheck, started: float) -> float:
        """Docker's rule, asked more often: a failure within the start period does not count; after
        it, `retries` failures at least `interval` apart are unhealthy; one pass is healthy."""
        hc = docker_healthcheck(hc)
        until, capped = self._until(started, healthcheck_bound(hc), "the HEALTHCHECK")
        failures, counted = 0, float("-inf")
        self._alive(container)
        while True:
            status, output = self._health_once(container, hc)
            now = time.monotonic()
            if not status:
                return now - started
            self._alive(container)  # a check that failed because the container exited says so
            if now - started >= hc.start_period_s and now - counted >= hc.interval_s:
                failures, counted = failures + 1, now
            if failures >= hc.retries or now >= until:
                self._fail(container, _health_failure(hc, failures, status, output) + capped)
            time.sleep(POLL_S)

    def _health_once(self, container: str, hc: Healthcheck) -> tuple[str, str]:
        """Run the HEALTHCHECK command once: ("", "") when it passed, else (status, last words)."""
        try:
            res = self.rt("exec", container, *hc.argv, check=False, timeout=hc.timeout_s + 5)
        except CommandError as exc:
            return _clip((exc.tail.strip() or exc.message).splitlines()[-1]), ""
        return ("", "") if res.ok else (f"exit {res.returncode}", _output(res))

    def _probe(self, container: str, check: HttpCheck, host_port: int, started: float) -> None:
        url = f"http://127.0.0.1:{host_port}{check.path}"
        bound = probe_bound(check)
        until, capped = self._until(started, bound, f"GET {check.path}")
        while True:
            last, final = _get(url)
            if not last:
                return  # it answered: alive (asking the runtime first costs a call per poll)
            self._alive(container)
            if final or time.monotonic() >= until:
                break
            time.sleep(POLL_S)
        reason = f"{check.origin}: GET {check.path} (container port {check.port}) {last}"
        if not final:
            reason += capped or (
                f" for {bound:g}s (initialDelaySeconds {check.initial_delay_s:g} + periodSeconds "
                f"{check.period_s or 10:g} x failureThreshold {check.failure_threshold or 3})"
            )
        self._fail(container, reason)

    def _command(self, container: str) -> None:
        self._alive(container)
        res = self.rt("exec", container, *self.plan.command, check=False, timeout=60)
        if not res.ok:
            self._alive(container)
            out = _output(res)
            reason = f"smoke command `{' '.join(self.plan.command)}` exited {res.returncode}"
            self._fail(container, reason + (f": {out}" if out else ""))


def _names(unset: list[str]) -> str:
    """The variables of "NAME: why" / "NAME (why)" entries."""
    return ", ".join(re.split(r": | \(", m, maxsplit=1)[0] for m in unset)


def _crash_summary(lines: list[str]) -> str:
    """What a container that exited at start said: its error line (the last one, the outermost
    exception) rather than the stack frames after it, else its last lines."""
    errors = [ln for ln in lines if _ERROR_LINE.match(ln)]
    if errors:
        return f": {_clip(errors[-1])}"
    shown = [_clip(ln) for ln in lines if ln.strip()][-_QUOTED:]
    return f"; last lines: {' | '.join(shown)}" if shown else "; it printed nothing"


def _health_failure(hc: Healthcheck, failures: int, status: str, output: str) -> str:
    command = _clip(json.dumps(list(hc.argv), separators=(",", ":"), ensure_ascii=False))
    times = f"failed {failures} time{'s' if failures != 1 else ''}" if failures else "had not passed"
    return f"HEALTHCHECK {command} {times} ({status})" + (f": {output}" if output else "")


def _get(url: str) -> tuple[str, bool]:
    """One GET: ("", _) when it passed, else (what happened, whether asking again is pointless)."""
    try:
        resp = requests.get(url, timeout=3, allow_redirects=False)
    except requests.RequestException as exc:
        return f"no answer ({type(exc).__name__})", False
    if 200 <= resp.status_code < 400:
        return "", False
    return f"answered {resp.status_code}", resp.status_code == 404  # a path not served stays so


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
