"""What the smoke check asks of an image, read without running anything: the httpGet probes of
every Deployment in k8s/ that runs it (named ports resolved), and `smoke` in its pyproject table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from .errors import ConfigError
from .refs import ImageRef

PROBE_KINDS = ("startupProbe", "readinessProbe", "livenessProbe")


@dataclass(frozen=True)
class HttpCheck:
    path: str
    port: int  # the container's port
    origin: str  # "k8s/api.yml Deployment moltbook-api readinessProbe", or the pyproject table


@dataclass(frozen=True)
class SmokePlan:
    http: tuple[HttpCheck, ...] = ()
    command: tuple[str, ...] = ()  # [tool.moltbuild.images.NAME] smoke.command, run in the container

    @property
    def ports(self) -> tuple[int, ...]:
        return tuple(sorted({c.port for c in self.http}))


def _manifests(k8s_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    docs = []
    for path in sorted(k8s_dir.glob("*.y*ml")):
        try:
            docs += [(path, d) for d in YAML(typ="safe").load_all(path.read_text()) if isinstance(d, dict)]
        except YAMLError:
            raise ConfigError(f"{path}: invalid YAML; fix the syntax") from None
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
    project_root: Path, manifest_name: str, configured: dict[str, Any] | None, where: str
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
    return SmokePlan(tuple(c for c in http if unique[(c.path, c.port)] is c), command)


def static_problems(project_root: Path, manifest_name: str, exposed: set[int]) -> list[str]:
    """Probes whose port the image does not EXPOSE (`exposed` from the Dockerfile)."""
    return [
        f"{c.origin}: GET {c.path} on port {c.port}, which the image does not EXPOSE "
        f"({', '.join(map(str, sorted(exposed))) or 'nothing'})"
        for c in deployment_checks(project_root, manifest_name)
        if c.port not in exposed
    ]


def dockerfile_exposed(dockerfile: Path) -> set[int]:
    """The ports the Dockerfile's last stage EXPOSEs (numbers only; variables are not resolved)."""
    stages: list[set[int]] = [set()]
    for line in dockerfile.read_text().replace("\\\n", " ").splitlines():
        words = line.split()
        if not words:
            continue
        if words[0].upper() == "FROM":
            stages.append(set())
        elif words[0].upper() == "EXPOSE":
            stages[-1] |= {int(w.split("/")[0]) for w in words[1:] if w.split("/")[0].isdigit()}
    return stages[-1]
