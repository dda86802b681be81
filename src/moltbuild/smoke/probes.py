"""What the smoke check asks of an image, read without running anything: the httpGet probes of
every Deployment in k8s/ that runs it (named ports resolved), and `smoke` in its pyproject table."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moltbuild.dockerfile import Dockerfile
from moltbuild.errors import ConfigError
from moltbuild.files import load_yaml
from moltbuild.refs import ImageRef
from moltbuild.settings import Secret

if TYPE_CHECKING:
    from moltbuild.project import ImageConfig

PROBE_KINDS = ("startupProbe", "readinessProbe", "livenessProbe")


@dataclass(frozen=True)
class HttpCheck:
    path: str
    port: int  # the container's port
    origin: str  # "k8s/api.yml Deployment moltbook-api readinessProbe", or the pyproject table
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
    # Every workload that runs the image: "k8s/api/deployment.yml Deployment moltbook-api".
    workloads: tuple[str, ...] = ()

    @property
    def ports(self) -> tuple[int, ...]:
        return tuple(sorted({c.port for c in self.http}))


def _manifests(k8s_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    files = sorted(k8s_dir.glob("*.y*ml"))
    return _parsed(tuple((p, p.stat().st_mtime_ns, p.stat().st_size) for p in files))


@functools.lru_cache(maxsize=8)  # every image of a plan reads the same manifests: parse them once
def _parsed(files: tuple[tuple[Path, int, int], ...]) -> list[tuple[Path, dict[str, Any]]]:
    docs = []
    for path, _, _ in files:
        docs += [(path, d) for d in load_yaml(path, multi=True) if isinstance(d, dict)]
    return docs


def _same_image(container_image: str, name: str) -> bool:
    try:
        return ImageRef.parse(container_image, "image").bare() == ImageRef.parse(name, "image").bare()
    except ConfigError:
        return False


def _port(value: Any, container: dict[str, Any], where: str) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    for port in container.get("ports") or []:
        if port.get("name") == value:
            return int(port["containerPort"])
    raise ConfigError(
        f"{where} uses port {value!r}, which the container does not name in ports:; fix the manifest"
    )


def deployment_checks(project_root: Path, manifest_name: str) -> list[HttpCheck]:
    """Every httpGet probe of every Deployment container that runs `manifest_name`."""
    checks = []
    for path, doc in _manifests(project_root / "k8s"):
        if doc.get("kind") not in ("Deployment", "StatefulSet", "DaemonSet"):
            continue
        pod = ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
        for container in pod.get("containers") or []:
            if not _same_image(str(container.get("image", "")), manifest_name):
                continue
            for kind in PROBE_KINDS:
                get = (container.get(kind) or {}).get("httpGet")
                if not get:
                    continue
                rel = path.relative_to(project_root)
                where = f"{rel} {doc['kind']} {doc['metadata']['name']} {kind}"
                checks.append(
                    HttpCheck(str(get.get("path") or "/"), _port(get.get("port"), container, where), where)
                )
    return checks


def smoke_plan(
    project_root: Path,
    manifest_name: str,
    configured: dict[str, Any] | None,
    where: str,
    dockerfile: Path | None = None,
    target: str | None = None,
) -> SmokePlan:
    """The probes of the manifests plus what `smoke = {path, port, command}` adds."""
    http = deployment_checks(project_root, manifest_name)
    command: tuple[str, ...] = ()
    if configured:
        unknown = set(configured) - {"path", "port", "command"}
        if unknown:
            raise ConfigError(
                f"{where} smoke has unknown key {sorted(unknown)[0]!r}; allowed: path, port, command"
            )
        if "path" in configured:
            if not isinstance(configured.get("port"), int):
                raise ConfigError(f"{where} smoke.path needs smoke.port (the container's port, a number)")
            http.append(HttpCheck(str(configured["path"]), configured["port"], f"{where} smoke"))
        if "command" in configured:
            cmd = configured["command"]
            if not isinstance(cmd, list) or not cmd or not all(isinstance(a, str) for a in cmd):
                raise ConfigError(f"{where} smoke.command must be a list of strings, e.g. ['app', '--check']")
            command = tuple(cmd)
    unique = {(c.path, c.port): c for c in reversed(http)}  # one GET per path and port, first origin named
    health = dockerfile_healthcheck(dockerfile, target) if dockerfile and dockerfile.is_file() else None
    return SmokePlan(tuple(c for c in http if unique[(c.path, c.port)] is c), command, health)


def smoke_plan_for(project_root: Path, cfg: ImageConfig) -> SmokePlan:
    """The smoke plan of one configured image: its manifests, its `smoke` table, its Dockerfile."""
    where = f"[tool.moltbuild.images.{cfg.name}]"
    return smoke_plan(project_root, cfg.manifest_name, cfg.smoke, where, cfg.dockerfile, cfg.target)


def static_problems(project_root: Path, manifest_name: str, exposed: set[int]) -> list[str]:
    """Probes whose port the image does not EXPOSE (`exposed` from the Dockerfile)."""
    return [
        f"{c.origin}: GET {c.path} on port {c.port}, which the image does not EXPOSE "
        f"({', '.join(map(str, sorted(exposed))) or 'nothing'})"
        for c in deployment_checks(project_root, manifest_name)
        if c.port not in exposed
    ]


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(text: str, where: str) -> float:
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ConfigError(f"{where}: {text!r} is not a duration such as 30s, 1m30s or 500ms")
    return sum(float(n) * _SECONDS[u] for n, u in parts)


def dockerfile_healthcheck(dockerfile: Path, target: str | None = None) -> Healthcheck | None:
    """The HEALTHCHECK of the stage the image is built from (`target`, else the last), as Docker
    would record it; None when that stage has none or says NONE."""
    spec = Dockerfile.read(dockerfile).stage(target).healthcheck
    return _parse_healthcheck(spec, f"{dockerfile} HEALTHCHECK") if spec else None


def _parse_healthcheck(spec: str, where: str) -> Healthcheck | None:
    options: dict[str, str] = {}
    while spec.startswith("--"):
        option, _, spec = spec.partition(" ")
        key, _, value = option[2:].partition("=")
        options[key] = value
        spec = spec.lstrip()
    kind, _, command = spec.partition(" ")
    if kind.upper() == "NONE":
        return None
    if kind.upper() != "CMD" or not command.strip():
        raise ConfigError(f"{where}: expected CMD [...] or NONE after the options, got {spec[:40]!r}")
    command = command.strip()
    try:
        parsed = json.loads(command) if command.startswith("[") else None
    except ValueError:
        parsed = None
    if isinstance(parsed, list) and parsed and all(isinstance(a, str) for a in parsed):
        argv = tuple(parsed)
    else:
        argv = ("/bin/sh", "-c", command)  # the shell form, as Docker runs it
    return Healthcheck(
        argv,
        _duration(options["interval"], where) if "interval" in options else 30.0,
        _duration(options["timeout"], where) if "timeout" in options else 30.0,
        _duration(options["start-period"], where) if "start-period" in options else 0.0,
        int(options["retries"]) if options.get("retries", "").isdigit() else 3,
    )
