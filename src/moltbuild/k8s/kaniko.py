"""Kaniko in the cluster, the pure part: the manifests under k8s/kaniko/ filled for a namespace,
the registry Secret, and one Job per image (executor args from the same plan as local builds)."""

from __future__ import annotations

import base64
import copy
import json
import re
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ruamel.yaml import YAML

from moltbuild.errors import ConfigError

if TYPE_CHECKING:
    from moltbuild.plan.planner import ImagePlan
    from moltbuild.registry.auth import Credentials
    from moltbuild.settings import Settings

SECRET_NAME = "moltbuild-registry"
JOB_SA = "moltbuild-kaniko"
MANAGED = {"app.kubernetes.io/managed-by": "moltbuild", "app.kubernetes.io/component": "kaniko"}
WORKSPACE = "/workspace"
# Run in the init container with the context on stdin; the executor starts once .ready exists.
RECEIVE = ["sh", "-c", f"tar -xzf - -C {WORKSPACE} && touch {WORKSPACE}/.ready"]


def manifests_dir(project_root: Path) -> Path:
    return project_root / "k8s" / "kaniko"


def _load_all(path: Path) -> list[dict[str, Any]]:
    try:
        return [d for d in YAML(typ="safe").load_all(path.read_text()) if d]
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror}); restore it from git") from None


def setup_objects(project_root: Path, namespace: str) -> list[dict[str, Any]]:
    """ServiceAccounts, Role and RoleBinding from k8s/kaniko/, placed in `namespace`."""
    objects = []
    for name in ("serviceaccounts.yml", "rbac.yml"):
        for obj in _load_all(manifests_dir(project_root) / name):
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


def job_name(image: ImagePlan) -> str:
    """Unique per run and image, a valid DNS label (63 at most)."""
    base = re.sub(r"[^a-z0-9-]+", "-", f"moltbuild-{image.name}-{image.pin_tag}".lower()).strip("-")[:50]
    return f"{base}-{secrets.token_hex(3)}"


def executor_args(
    image: ImagePlan,
    *,
    push: bool,
    no_cache: bool,
    mirror: str | None,
    insecure: list[str],
) -> list[str]:
    if image.multi_platform:
        raise ConfigError(
            f"{image.name}: kaniko builds one platform per Job; build multi-platform images with "
            "--backend buildah, or pass one --platform"
        )
    args = [f"--context=dir://{WORKSPACE}/context", f"--dockerfile={WORKSPACE}/Dockerfile"]
    args += [f"--destination={ref}" for ref in image.refs] if push else ["--no-push"]
    args += [f"--build-arg={k}={v}" for k, v in image.build_args.items()]
    args += [f"--label={k}={v}" for k, v in image.labels.items()]
    if image.target:
        args.append(f"--target={image.target}")
    if image.platforms:
        args.append(f"--custom-platform={image.platforms[0]}")
    if no_cache:
        args.append("--cache=false")
    else:  # layers cached in the registry, next to the image
        args += ["--cache=true", f"--cache-repo={image.ref.name}/cache"]
    if mirror:
        args.append(f"--registry-mirror={mirror}")
    hosts = {image.ref.host, *([mirror.split("/", 1)[0]] if mirror else [])}
    args += [f"--insecure-registry={h}" for h in sorted(hosts) if h in insecure]
    args += ["--push-retry=3", "--digest-file=/dev/termination-log"]
    return args


def job_manifest(
    project_root: Path,
    image: ImagePlan,
    *,
    name: str,
    namespace: str,
    settings: Settings,
    args: list[str],
) -> dict[str, Any]:
    """k8s/kaniko/job.yml filled for one image."""
    (job,) = _load_all(manifests_dir(project_root) / "job.yml")
    labels = {**MANAGED, "moltbuild.dev/image": image.name}
    job["metadata"].update(name=name, namespace=namespace, labels=labels)
    job["spec"]["activeDeadlineSeconds"] = timeout_of(settings)
    pod = job["spec"]["template"]
    pod["metadata"]["labels"] = dict(labels)
    (helper,) = pod["spec"]["initContainers"]
    (executor,) = pod["spec"]["containers"]
    helper["image"] = settings["MOLTBUILD_KANIKO_HELPER_IMAGE"]
    executor["image"] = settings["MOLTBUILD_KANIKO_IMAGE"]
    executor["args"] = args
    return job


def timeout_of(settings: Settings) -> int:
    raw = settings["MOLTBUILD_KANIKO_TIMEOUT"]
    if not str(raw).isdigit() or int(raw) < 1:
        source = settings.source("MOLTBUILD_KANIKO_TIMEOUT")
        raise ConfigError(
            f"MOLTBUILD_KANIKO_TIMEOUT={raw!r} (from {source}) must be a whole number of seconds (e.g. 1800)"
        )
    return int(raw)


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


def setup_cluster(*, namespace: str | None = None, context: str | None = None, dry_run: bool = False) -> None:
    """`invoke kaniko.setup`: the registry Secret, ServiceAccounts and RBAC, created or updated."""
    from moltbuild.flows.context import Session
    from moltbuild.k8s.cluster import Cluster
    from moltbuild.plan.planner import registry_prefix
    from moltbuild.registry.auth import preflight_push

    session = Session.create(cli=kube_flags(namespace, context))
    settings, say = session.settings, session.runner.say
    ns = settings["MOLTBUILD_KUBE_NAMESPACE"]
    host = registry_prefix(settings["MOLTBUILD_REGISTRY"]).host
    creds = preflight_push(host, settings, check_registry=False)
    objects = setup_objects(settings.project_root, ns)
    if creds:
        objects.insert(0, registry_secret(ns, {host: creds}))
    else:
        say(f"no credentials for {host}: no registry Secret (the registry must accept anonymous pushes)")
    if dry_run:
        say(f"dry run: would apply to namespace {ns} (Secret data masked):")
        render(objects, say)
        return
    cluster = Cluster(context=settings.get("MOLTBUILD_KUBE_CONTEXT"), namespace=ns)
    for obj in objects:
        say(f"{obj['kind']}/{obj['metadata']['name']} {cluster.apply(obj)} in {ns}")


def kube_flags(namespace: str | None, context: str | None) -> dict[str, tuple[str, str]]:
    flags = {
        "MOLTBUILD_KUBE_NAMESPACE": (namespace, "--namespace"),
        "MOLTBUILD_KUBE_CONTEXT": (context, "--context"),
    }
    return {k: v for k, v in flags.items() if v[0]}
