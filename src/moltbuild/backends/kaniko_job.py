"""The kaniko backend's Job: executor args from the same plan as local builds, and the Job
template (packaged, or the repository's k8s/kaniko/job.yml) filled for one image."""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

from moltbuild.errors import ConfigError
from moltbuild.k8s.kaniko import MANAGED, WORKSPACE, job_template
from moltbuild.plan.planner import ImagePlan
from moltbuild.settings import Settings


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
    args += [f"--target={image.target}"] if image.target else []
    args += [f"--custom-platform={image.platforms[0]}"] if image.platforms else []
    args += _cache_args(image, push=push, no_cache=no_cache)
    args += _registry_args(image, mirror, insecure)
    # --force: the Job's container is always a container, but without the service-account token
    # (not mounted) kaniko's own check finds none on a cgroup v2 node whose snapshotter is not
    # overlayfs ("kaniko should only be run inside of a container"): docs/cluster.md.
    args += ["--push-retry=3", "--digest-file=/dev/termination-log", "--force"]
    return args


def _cache_args(image: ImagePlan, *, push: bool, no_cache: bool) -> list[str]:
    if push and image.cache and not no_cache:  # layers cached in the registry, next to the image
        return ["--cache=true", f"--cache-repo={image.cache}"]
    return ["--cache=false"]  # without --push nothing is pushed: no cache layers, no push-rights check


def _registry_args(image: ImagePlan, mirror: str | None, insecure: list[str]) -> list[str]:
    """The Docker Hub mirror, and plain HTTP for the image's registry or the mirror's when allowed."""
    args = [f"--registry-mirror={mirror}"] if mirror else []
    hosts = {image.ref.host, *([mirror.split("/", 1)[0]] if mirror else [])}
    return args + [f"--insecure-registry={h}" for h in sorted(hosts) if h in insecure]


def job_manifest(
    project_root: Path,
    image: ImagePlan,
    *,
    name: str,
    namespace: str,
    settings: Settings,
    args: list[str],
) -> dict[str, Any]:
    """The Job template filled for one image."""
    job = job_template(project_root)
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
