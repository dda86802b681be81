"""Kaniko in the cluster, the pure part: the manifests filled for a namespace, the registry
Secret, and the Job template filled per image (executor args from the same plan as local builds).

The manifests ship with moltbuild (package data, kaniko_defaults/); a file of the same name in
the repository's k8s/kaniko/ overrides the packaged one. A project without that folder, or
without one of its files, uses the defaults; a file that is there but unreadable or not
Kubernetes objects is an error naming it."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from moltbuild.errors import ConfigError
from moltbuild.k8s.deployment import documents
from moltbuild.registry.auth import Credentials, docker_config

SECRET_NAME = "moltbuild-registry"
JOB_SA = "moltbuild-kaniko"
MANAGED = {"app.kubernetes.io/managed-by": "moltbuild", "app.kubernetes.io/component": "kaniko"}
WORKSPACE = "/workspace"


def receive(size: int) -> list[str]:
    """Run in the init container with the context on stdin; the executor starts once .ready
    exists. `head -c` ends the read at the length sent, so no end-of-stdin signal is needed."""
    return ["sh", "-c", f"head -c {int(size)} | tar -xzf - -C {WORKSPACE} && touch {WORKSPACE}/.ready"]


DEFAULTS = "kaniko_defaults"  # package data beside this module
MANIFESTS = ("serviceaccounts.yml", "rbac.yml", "job.yml")


@dataclass(frozen=True)
class Manifest:
    source: str  # the file the objects came from
    fix: str  # what to do when they are not what moltbuild needs
    objects: list[dict[str, Any]]


def overrides_dir(project_root: Path) -> Path:
    """The repository's own manifests, each overriding the packaged one of the same name."""
    return project_root / "k8s" / "kaniko"


def packaged(name: str) -> Any:
    """The packaged default `name` (an importlib.resources Traversable)."""
    return resources.files(__package__).joinpath(DEFAULTS).joinpath(name)


def load_manifest(project_root: Path, name: str) -> Manifest:
    """The objects of `name`: the repository's k8s/kaniko/<name> when it has that file, else the
    copy packaged with moltbuild."""
    override = overrides_dir(project_root) / name
    fix = f"fix it, or delete it to use moltbuild's default {name}"
    if override.is_symlink() and not override.exists():
        raise ConfigError(f"{override}: links to {override.readlink()}, which does not exist; {fix}")
    if override.exists():
        return _checked(override, documents(override), fix)
    resource = packaged(name)
    label = Path(str(resource))
    fix = "reinstall moltbuild (pip install --force-reinstall moltbuild)"
    try:
        text = resource.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise ConfigError(f"{label}: moltbuild's packaged {name} is missing or unreadable; {fix}") from None
    return _checked(label, documents(label, text), fix)


def _checked(path: Path, docs: list[Any], fix: str) -> Manifest:
    if not docs:
        raise ConfigError(f"{path}: holds no Kubernetes object; {fix}")
    for number, doc in enumerate(docs, 1):
        meta = doc.get("metadata") if isinstance(doc, dict) else None
        if not (isinstance(meta, dict) and meta.get("name") and isinstance(doc.get("kind"), str)):
            raise ConfigError(
                f"{path}: document {number} is not a Kubernetes object (kind, metadata.name); {fix}"
            )
    return Manifest(str(path), fix, docs)


def job_template(project_root: Path) -> dict[str, Any]:
    """The Job `invoke kaniko.build` fills per image: one Job whose pod has one init container
    (receives the context) and one container (the executor)."""
    manifest = load_manifest(project_root, "job.yml")
    try:
        (job,) = manifest.objects
        pod = job["spec"]["template"]
        (helper,), (executor,) = pod["spec"]["initContainers"], pod["spec"]["containers"]
        shapes = (job["spec"], pod.setdefault("metadata", {}), helper, executor)
        if job["kind"] != "Job" or not all(isinstance(each, dict) for each in shapes):
            raise ValueError
    except (AttributeError, KeyError, TypeError, ValueError):
        raise ConfigError(
            f"{manifest.source}: must be one Job whose pod has one init container and one container; "
            f"{manifest.fix}"
        ) from None
    return job


def setup_objects(project_root: Path, namespace: str) -> list[dict[str, Any]]:
    """ServiceAccounts, Role and RoleBinding (packaged, or the repository's k8s/kaniko/ overrides),
    placed in `namespace`."""
    objects = []
    for name in ("serviceaccounts.yml", "rbac.yml"):
        for obj in load_manifest(project_root, name).objects:
            obj["metadata"]["namespace"] = namespace
            for subject in obj.get("subjects") or []:
                if isinstance(subject, dict):
                    subject["namespace"] = namespace
            objects.append(obj)
    return objects


def registry_secret(namespace: str, logins: Mapping[str, Credentials]) -> dict[str, Any]:
    """A dockerconfigjson Secret: the executor finds it as /kaniko/.docker/config.json."""
    config = json.dumps(docker_config(logins))
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": SECRET_NAME,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "moltbuild"},
        },
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(config.encode()).decode()},
    }


def masked(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy safe to print: Secret data replaced."""
    shown = copy.deepcopy(obj)
    if shown.get("kind") == "Secret":
        shown["data"] = {key: "****" for key in shown.get("data", {})}
        if "stringData" in shown:
            shown["stringData"] = {key: "****" for key in shown["stringData"] or {}}
    return shown


def render(objects: list[dict[str, Any]], say: Callable[[str], None]) -> None:
    """Print manifests as one YAML stream (Secrets masked)."""
    import io

    out = io.StringIO()
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.explicit_start = True
    yaml.width = 4096  # image references stay on one line
    yaml.dump_all([masked(o) for o in objects], out)
    say(out.getvalue().rstrip("\n"))
