"""What the smoke check asks of an image, read without running a container: the httpGet probes
and env of every workload in k8s/ that runs it (as kustomize renders k8s/, named ports resolved),
the HEALTHCHECK of the stage it is built from, and `smoke` in its pyproject table."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moltbuild.dockerfile import Dockerfile
from moltbuild.errors import ConfigError
from moltbuild.k8s.manifests import Workload, load_manifests
from moltbuild.settings import Secret
from moltbuild.smoke.env import configured_env, workload_env

if TYPE_CHECKING:
    from moltbuild.project import ImageConfig
    from moltbuild.system.processes import Runner

PROBE_KINDS = ("startupProbe", "readinessProbe", "livenessProbe")
SMOKE_KEYS_ORDER = ("path", "port", "command", "env")  # [tool.moltbuild.images.NAME.smoke]
SMOKE_KEYS = frozenset(SMOKE_KEYS_ORDER)


@dataclass(frozen=True)
class HttpCheck:
    path: str
    port: int  # the container's port
    origin: str  # "k8s/api.yml Deployment shop-api readinessProbe", or the pyproject table
    initial_delay_s: float = 0.0  # the probe's initialDelaySeconds
    period_s: float = 10.0  # periodSeconds
    failure_threshold: int = 3  # failureThreshold: how long Kubernetes itself would wait


@dataclass(frozen=True)
class Healthcheck:
    argv: tuple[str, ...]
    interval_s: float = 30.0
    timeout_s: float = 30.0
    start_period_s: float = 0.0
    retries: int = 3


@dataclass(frozen=True)
class SmokePlan:
    http: tuple[HttpCheck, ...] = ()
    command: tuple[str, ...] = ()  # [tool.moltbuild.images.NAME] smoke.command, run in the container
    # The Dockerfile's HEALTHCHECK: an OCI image has no field for it, so the check reads it here.
    healthcheck: Healthcheck | None = None
    # The workload's settings the container gets: plain env values, ConfigMap keys, and secrets
    # configured for the smoke check (values from secrets are Secret: never in argv or output).
    env: tuple[tuple[str, str | Secret], ...] = ()
    # Variables the workload sets that the container does not get, each with why ("secret x/y").
    env_missing: tuple[str, ...] = ()
    # Variables from secrets marked `optional: true` the container does not get: a pod starts without them.
    env_optional: tuple[str, ...] = ()
    # Every workload that runs the image: "k8s/api/deployment.yml Deployment shop-api".
    workloads: tuple[str, ...] = ()
    probes: int = 0  # the httpGet probes of those workloads (`http` asks each path and port once)

    @property
    def ports(self) -> tuple[int, ...]:
        return tuple(sorted({c.port for c in self.http}))

    @property
    def found(self) -> str:
        """What the manifests gave: "2 probes of 1 workload"."""
        return f"{_counted(self.probes, 'probe')} of {_counted(len(self.workloads), 'workload')}"


def _counted(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _port(value: Any, container: dict[str, Any], where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    for port in container.get("ports") or []:
        if isinstance(port, dict) and port.get("name") == value:
            return int(port["containerPort"])
    raise ConfigError(
        f"{where} uses port {value!r}, which the container does not name in ports:; fix the manifest"
    )


def _timing(probe: dict[str, Any], key: str, default: int, where: str) -> int:
    value = probe.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where}: {key} {value!r} must be a whole number of 0 or more; fix the manifest")
    return value


def _container_checks(workload: Workload, container: dict[str, Any]) -> list[HttpCheck]:
    checks = []
    for kind in PROBE_KINDS:
        probe = container.get(kind) if isinstance(container.get(kind), dict) else {}
        get = probe.get("httpGet")
        if not isinstance(get, dict):
            continue
        where = f"{workload.label} {kind}"
        checks.append(
            HttpCheck(
                str(get.get("path") or "/"),
                _port(get.get("port"), container, where),
                where,
                initial_delay_s=_timing(probe, "initialDelaySeconds", 0, where),
                period_s=_timing(probe, "periodSeconds", 10, where),
                failure_threshold=_timing(probe, "failureThreshold", 3, where),
            )
        )
    return checks


def workload_checks(
    project_root: Path, manifest_name: str, runner: Runner | None = None
) -> tuple[list[HttpCheck], list[Workload]]:
    """Every httpGet probe (startup, readiness, liveness) of every container running
    `manifest_name` in the workloads of k8s/, and those workloads."""
    running = load_manifests(project_root, runner).running(manifest_name)
    checks = [c for workload, container in running for c in _container_checks(workload, container)]
    return checks, list({w.label: w for w, _ in running}.values())


def deployment_checks(
    project_root: Path, manifest_name: str, runner: Runner | None = None
) -> list[HttpCheck]:
    """Every httpGet probe of every workload container that runs `manifest_name`."""
    return workload_checks(project_root, manifest_name, runner)[0]


def _configured(configured: dict[str, Any] | None, where: str) -> tuple[list[HttpCheck], tuple[str, ...]]:
    """What `smoke = {path, port, command}` adds: a GET and a command."""
    if not configured:
        return [], ()
    unknown = set(configured) - SMOKE_KEYS
    if unknown:
        raise ConfigError(
            f"{where} smoke has unknown key {sorted(unknown)[0]!r}; allowed: {', '.join(SMOKE_KEYS_ORDER)}"
        )
    http = []
    if "path" in configured:
        if not isinstance(configured.get("port"), int):
            raise ConfigError(f"{where} smoke.path needs smoke.port (the container's port, a number)")
        http.append(HttpCheck(str(configured["path"]), configured["port"], f"{where} smoke"))
    command: tuple[str, ...] = ()
    if "command" in configured:
        cmd = configured["command"]
        if not isinstance(cmd, list) or not cmd or not all(isinstance(a, str) for a in cmd):
            raise ConfigError(f"{where} smoke.command must be a list of strings, e.g. ['app', '--check']")
        command = tuple(cmd)
    return http, command


def smoke_plan(
    project_root: Path,
    manifest_name: str,
    configured: dict[str, Any] | None,
    where: str,
    dockerfile: Path | Dockerfile | None = None,
    target: str | None = None,
    runner: Runner | None = None,
) -> SmokePlan:
    """The probes and env of the workloads running the image, plus what `smoke = {path, port,
    command, env}` adds. `runner`: render k8s/ with kustomize or kubectl when on its PATH."""
    extra, command = _configured(configured, where)
    given = configured_env((configured or {}).get("env"), where)
    manifests = load_manifests(project_root, runner)
    running = manifests.running(manifest_name)
    found = [c for workload, container in running for c in _container_checks(workload, container)]
    env = workload_env(manifests, running, given, f"{where.removesuffix(']')}.smoke]")
    http = found + extra
    unique = {(c.path, c.port): c for c in reversed(http)}  # one GET per path and port, first origin named
    health = dockerfile_healthcheck(dockerfile, target) if _readable(dockerfile) else None
    return SmokePlan(
        tuple(c for c in http if unique[(c.path, c.port)] is c),
        command,
        health,
        env=env.values,
        env_missing=env.missing,
        env_optional=env.optional,
        workloads=tuple(dict.fromkeys(w.label for w, _ in running)),
        probes=len(found),
    )


def smoke_plan_for(
    project_root: Path, cfg: ImageConfig, runner: Runner | None = None, dockerfile: Dockerfile | None = None
) -> SmokePlan:
    """The smoke plan of one configured image: its workloads, its `smoke` table, its Dockerfile
    (`dockerfile`: the model the caller already parsed, else read here)."""
    where = f"[tool.moltbuild.images.{cfg.name}]"
    source = dockerfile or cfg.dockerfile
    return smoke_plan(project_root, cfg.manifest_name, cfg.smoke, where, source, cfg.target, runner)


def _readable(dockerfile: Path | Dockerfile | None) -> bool:
    return isinstance(dockerfile, Dockerfile) or (dockerfile is not None and dockerfile.is_file())


def static_problems(
    project_root: Path, manifest_name: str, exposed: set[int], runner: Runner | None = None
) -> list[str]:
    """Probes whose port the image does not EXPOSE (`exposed` from the Dockerfile)."""
    return [
        f"{c.origin}: GET {c.path} on port {c.port}, which the image does not EXPOSE "
        f"({', '.join(map(str, sorted(exposed))) or 'nothing'})"
        for c in deployment_checks(project_root, manifest_name, runner)
        if c.port not in exposed
    ]


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(text: str, where: str) -> float:
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ConfigError(f"{where}: {text!r} is not a duration such as 30s, 1m30s or 500ms")
    return sum(float(n) * _SECONDS[u] for n, u in parts)


def dockerfile_healthcheck(dockerfile: Path | Dockerfile, target: str | None = None) -> Healthcheck | None:
    """The HEALTHCHECK of the stage the image is built from (`target`, else the last), as Docker
    would record it; None when that stage has none or says NONE. `dockerfile`: a path or the model."""
    model = dockerfile if isinstance(dockerfile, Dockerfile) else Dockerfile.read(dockerfile)
    spec = model.stage(target).healthcheck
    return _parse_healthcheck(spec, f"{model.path} HEALTHCHECK") if spec else None


_HEALTH_TIMES = (("interval", 30.0), ("timeout", 30.0), ("start-period", 0.0))  # Docker's defaults


def _parse_healthcheck(spec: str, where: str) -> Healthcheck | None:
    options, spec = _health_options(spec)
    kind, _, command = spec.partition(" ")
    if kind.upper() == "NONE":
        return None
    if kind.upper() != "CMD" or not command.strip():
        raise ConfigError(f"{where}: expected CMD [...] or NONE after the options, got {spec[:40]!r}")
    times = [_duration(options[key], where) if key in options else default for key, default in _HEALTH_TIMES]
    retries = int(options["retries"]) if options.get("retries", "").isdigit() else 3
    return Healthcheck(_health_argv(command.strip()), *times, retries)


def _health_options(spec: str) -> tuple[dict[str, str], str]:
    """The leading --key=value options, and what follows them."""
    options: dict[str, str] = {}
    while spec.startswith("--"):
        option, _, spec = spec.partition(" ")
        key, _, value = option[2:].partition("=")
        options[key] = value
        spec = spec.lstrip()
    return options, spec


def _health_argv(command: str) -> tuple[str, ...]:
    """The exec form as written, else the shell form as Docker runs it."""
    try:
        parsed = json.loads(command) if command.startswith("[") else None
    except ValueError:
        parsed = None
    if isinstance(parsed, list) and parsed and all(isinstance(a, str) for a in parsed):
        return tuple(parsed)
    return ("/bin/sh", "-c", command)
