"""Kaniko in the cluster, the pure part: the manifests under k8s/kaniko/ filled for a namespace,
the registry Secret, and one Job per image (executor args from the same plan as local builds)."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from moltbuild.errors import ConfigError
from moltbuild.files import load_yaml
from moltbuild.registry.auth import Credentials

SECRET_NAME = "moltbuild-registry"
JOB_SA = "moltbuild-kaniko"
MANAGED = {"app.kubernetes.io/managed-by": "moltbuild", "app.kubernetes.io/component": "kaniko"}
WORKSPACE = "/workspace"
# Run in the init container with the context on stdin; the executor starts once .ready exists.
RECEIVE = ["sh", "-c", f"tar -xzf - -C {WORKSPACE} && touch {WORKSPACE}/.ready"]


def manifests_dir(project_root: Path) -> Path:
    return project_root / "k8s" / "kaniko"


def load_all(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ConfigError(f"{path}: missing; in-cluster builds read it (restore it from git)")
    return [d for d in load_yaml(path, multi=True) if d]


def setup_objects(project_root: Path, namespace: str) -> list[dict[str, Any]]:
    """ServiceAccounts, Role and RoleBinding from k8s/kaniko/, placed in `namespace`."""
    objects = []
    for name in ("serviceaccounts.yml", "rbac.yml"):
        for obj in load_all(manifests_dir(project_root) / name):
            obj["metadata"]["namespace"] = namespace
            for subject in obj.get("subjects") or []:
                subject["namespace"] = namespace
            objects.append(obj)
    return objects


def registry_secret(namespace: str, logins: Mapping[str, Credentials]) -> dict[str, Any]:
    """A dockerconfigjson Secret: the executor finds it as /kaniko/.docker/config.json."""
    auths = {
        host: {"auth": base64.b64encode(f"{c.username}:{c.password.reveal()}".encode()).decode()}
        for host, c in logins.items()
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": SECRET_NAME,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "moltbuild"},
        },
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(json.dumps({"auths": auths}).encode()).decode()},
    }


def masked(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy safe to print: Secret data replaced."""
    shown = copy.deepcopy(obj)
    if shown.get("kind") == "Secret":
        shown["data"] = {key: "****" for key in shown.get("data", {})}
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
