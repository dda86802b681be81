"""The local target of `invoke dev --local`: each image runs in a container of the runtime the smoke
check drives (podman on buildah's storage, or docker; the crun -> runc fallback included), with its
workload's env (smoke/env.py) and every container port published on a free 127.0.0.1 port that
stays the same across rebuilds; readiness is the smoke check's (HEALTHCHECK, probe paths). Logs are
streamed as `log` events; a rebuild replaces the container, a sync is `cp` into it."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from moltbuild.dev.target import Emit, Event
from moltbuild.errors import MoltbuildError
from moltbuild.smoke.probes import SmokePlan
from moltbuild.smoke.run import ContainerRuntime, SmokeCheck, exposed_ports, healthcheck_of
from moltbuild.system import state
from moltbuild.system.processes import Runner


def free_port() -> int:
    """A port nothing listens on at 127.0.0.1 now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class _Running:
    container: str
    ports: dict[int, int] = field(default_factory=dict)  # container port -> host port
    logs: subprocess.Popen | None = None


class LocalTarget:
    """Containers on this machine. `plans`: each image's smoke plan (env, probes, ports)."""

    def __init__(self, runner: Runner, runtime: ContainerRuntime, plans: Mapping[str, SmokePlan]) -> None:
        self.runner, self.rt, self.plans = runner, runtime, dict(plans)
        self.running: dict[str, _Running] = {}
        self.host_ports: dict[tuple[str, int], int] = {}  # kept across rebuilds: the URL stays
        self.announced: set[tuple[str, int]] = set()
        self.lock = threading.Lock()
        self.cleanup: Callable[[], None] | None = None  # the runtime's private config dir

    # -- the Target protocol -------------------------------------------------------------------

    def describe(self, refs: Mapping[str, str]) -> list[str]:
        lines = [f"local: {self.rt.argv[0]} runs each image, ports on 127.0.0.1; nothing is pushed"]
        for name, ref in refs.items():
            plan = self.plans[name]
            ports = ", ".join(f"127.0.0.1:FREE->{p}" for p in plan.ports) or "the image's EXPOSEd ports"
            env = f"{len(plan.env)} variable(s) from {', '.join(plan.workloads) or 'its smoke table'}"
            checks = [f"GET {c.path}:{c.port}" for c in plan.http] or ["its HEALTHCHECK, if any"]
            lines.append(f"[{name}] + {self.rt.argv[0]} run -d {ref}: ports {ports}; env {env}")
            lines.append(f"[{name}]   ready when: {', '.join(checks)}")
        return lines

    def deploy(self, refs: Mapping[str, str], emit: Emit, since: float) -> bool:
        ok = True
        for name, ref in refs.items():
            ok = self._deploy_one(name, ref, emit, since) and ok
        return ok

    def sync(self, name: str, files: Sequence[tuple[Path, str]], emit: Emit, since: float) -> bool:
        running = self.running.get(name)
        if running is None or not files:
            return False
        for host, dest in files:
            res = self.rt("cp", str(host), f"{running.container}:{dest}", check=False, timeout=60)
            if not res.ok:
                self.runner.say(f"[{name}] cp {host.name} failed ({res.stderr.strip()}); rebuilding instead")
                return False
        done = [dest for _, dest in files]
        emit(Event("synced", name, time.monotonic() - since, {"files": done}))
        return True

    def close(self, *, keep: bool) -> None:
        for name in list(self.running):
            self._stop(name, remove=not keep)
        if self.cleanup:
            self.cleanup()

    # -- one image -----------------------------------------------------------------------------

    def _deploy_one(self, name: str, ref: str, emit: Emit, since: float) -> bool:
        if name in self.running:
            self._stop(name, remove=True)
        plan = self.plans[name]
        config = self.rt.config(ref)
        ports = sorted(set(plan.ports) | exposed_ports(config))
        for port in ports:
            self.host_ports.setdefault((name, port), free_port())
        container = f"moltbuild-dev-{name}-{secrets.token_hex(3)}"
        running = _Running(container, {p: self.host_ports[(name, p)] for p in ports})
        said: list[str] = []
        check = SmokeCheck(self.rt, name, plan, said.append, f"[{name}] ")
        publish = [a for p, host in running.ports.items() for a in ("-p", f"127.0.0.1:{host}:{p}")]
        state.on_interrupt(container, lambda: self.rt.remove(container))
        self.running[name] = running
        try:
            started = check.launch(container, ref, publish)
        except MoltbuildError as exc:
            emit(Event("failed", name, time.monotonic() - since, {"reason": exc.message, "lines": said}))
            return False
        emit(Event("deployed", name, time.monotonic() - since, {"ref": ref, "container": container}))
        running.logs = self._follow(name, container, emit)
        try:
            # Readiness as Kubernetes sees it: the probe paths; the HEALTHCHECK (an exec per
            # poll, slower) only for an image no probe asks
            health = None if plan.http else healthcheck_of(config) or plan.healthcheck
            check.wait_ready(container, health, started, hosts=running.ports)
        except MoltbuildError as exc:
            lines = [ln.split("| ", 1)[-1] for ln in said if "  | " in ln]
            emit(Event("failed", name, time.monotonic() - since, {"reason": exc.message, "lines": lines}))
            return False
        emit(Event("ready", name, time.monotonic() - since, {"container": container}))
        self._announce(name, running, emit, since)
        return True

    def _announce(self, name: str, running: _Running, emit: Emit, since: float) -> None:
        for port, host in running.ports.items():
            if (name, port) not in self.announced:
                self.announced.add((name, port))
                url = f"http://127.0.0.1:{host}/"
                emit(Event("url", name, time.monotonic() - since, {"url": url, "port": port}))

    def _follow(self, name: str, container: str, emit: Emit) -> subprocess.Popen:
        """`logs -f` in a thread: each line a `log` event."""
        proc = self.runner.follow([*self.rt.argv, "logs", "-f", container], env=self.rt.env)

        def pump() -> None:
            assert proc.stdout is not None
            with contextlib.suppress(ValueError, OSError):  # closed when the container goes
                for raw in proc.stdout:
                    emit(Event("log", name, None, {"line": raw.rstrip("\n")}))

        threading.Thread(target=pump, name=f"dev-logs-{name}", daemon=True).start()
        return proc

    def _stop(self, name: str, *, remove: bool) -> None:
        running = self.running.pop(name)
        if remove:
            self.rt.remove(running.container)
        state.done(running.container)
        if running.logs is not None:
            Runner.stop(running.logs, grace=2)


def private_config(runtime_dir: str) -> Callable[[], None]:
    """What removes the runtime's private config dir on close."""
    return lambda: shutil.rmtree(runtime_dir, ignore_errors=True)
