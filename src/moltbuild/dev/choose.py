"""Which target the loop runs on and its names: `--local` (the default: nothing leaves this
machine) or `--cluster` (a dev namespace, MOLTBUILD_DEV_NAMESPACE or one derived from the user,
never the project's own namespace), and the fast settings every loop build uses."""

from __future__ import annotations

import getpass
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from moltbuild.dev.target import Target
from moltbuild.errors import ConfigError
from moltbuild.flows.context import Session
from moltbuild.project import ImageConfig
from moltbuild.settings import Settings

TARGETS = ("local", "cluster")
DEFAULT_TARGET = "local"  # needs no cluster and pushes nothing: what a laptop has
FAST = "invoke dev"  # the source the loop's own settings show in `env.show`-style messages


def pick_target(*, local: bool, cluster: bool) -> str:
    if local and cluster:
        raise ConfigError("--local and --cluster exclude each other; pass one (default: --local)")
    return "cluster" if cluster else DEFAULT_TARGET


def fast_overrides(target: str, builder: str | None) -> dict[str, tuple[str, str]]:
    """The loop's build settings (above the environment, below flags): no attestation of a
    throw-away image, no registry layer-cache push, no smoke check (the target's own readiness
    is the check); `--builder kaniko` builds in the cluster."""
    fast = {
        "MOLTBUILD_ATTEST": ("off", FAST),
        "MOLTBUILD_REGISTRY_CACHE": ("0", FAST),
        "MOLTBUILD_SMOKE": ("0", FAST),
    }
    if builder:
        if builder == "kaniko" and target != "cluster":
            raise ConfigError(
                "--builder kaniko builds in the cluster and keeps no local image: use it with --cluster"
            )
        fast["MOLTBUILD_BACKEND"] = (builder, "--builder")
    return fast


def _label(text: str) -> str:
    """TEXT as a DNS-1123 label: lower case, [a-z0-9-], no dash at either end, at most 63."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower())
    label = re.sub(r"-{2,}", "-", label).strip("-")
    return label[:63].rstrip("-")


def dev_namespace(settings: Settings, environ: Mapping[str, str]) -> str:
    """MOLTBUILD_DEV_NAMESPACE, else `dev-USER` (USER/LOGNAME, sanitized); never the project's
    own namespace (MOLTBUILD_KUBE_NAMESPACE / [tool.moltbuild] kube_namespace)."""
    configured = (settings.get("MOLTBUILD_DEV_NAMESPACE") or "").strip()
    if configured:
        name = configured
        if _label(name) != name:
            raise ConfigError(
                f"MOLTBUILD_DEV_NAMESPACE={configured!r} ({settings.source('MOLTBUILD_DEV_NAMESPACE')}) is "
                f"not a namespace name: lower-case letters, digits and '-', e.g. {_label(name) or 'dev-me'}"
            )
    else:
        user = environ.get("USER") or environ.get("LOGNAME") or _login()
        name = _label(f"dev-{user}") or "dev"
    shared = (settings.get("MOLTBUILD_KUBE_NAMESPACE") or "").strip()
    if name == shared:
        raise ConfigError(
            f"the dev namespace {name!r} is the project's own namespace (MOLTBUILD_KUBE_NAMESPACE); "
            "set MOLTBUILD_DEV_NAMESPACE to another one, e.g. dev-yourname"
        )
    return name


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "user"


def local_target(session: Session, configs: Sequence[ImageConfig], *, dry_run: bool) -> Target:
    """The LocalTarget: the runtime of the local backend the builds use (podman on buildah's
    storage, or docker), its config in a private dir the target removes on close. A dry run
    prepares nothing: it only names the runtime."""
    from moltbuild.backends.contract import RunSpec
    from moltbuild.backends.selection import make_backend
    from moltbuild.dev.local import LocalTarget, private_config
    from moltbuild.flows.build import choose
    from moltbuild.plan.request import BuildRequest
    from moltbuild.smoke.probes import smoke_plan_for
    from moltbuild.smoke.runtime import ContainerRuntime
    from moltbuild.system import owners

    root, runner = session.settings.project_root, session.runner
    plans = {cfg.name: smoke_plan_for(root, cfg, runner) for cfg in configs}
    name, _ = choose(session, BuildRequest(dry_run=dry_run))
    backend = make_backend(name, runner, session.settings, session.storage)
    if not backend.keeps_images:
        raise ConfigError(f"the {name} backend keeps no local image to run; --local needs buildah or docker")
    if dry_run:
        tool = "docker" if name == "docker" else "podman"
        return LocalTarget(runner, ContainerRuntime(runner, [tool]), plans)
    folder = owners.make_private_dir()
    backend.prepare(RunSpec(Path(folder), purpose=FAST))
    target = LocalTarget(runner, backend.runtime(), plans)
    target.cleanup = private_config(folder)
    return target


def cluster_target(session: Session, names: Sequence[str], synced: frozenset[str]) -> Target:
    """The other helper's ClusterTarget (moltbuild.dev.cluster), imported on use."""
    try:
        from moltbuild.dev.cluster import ClusterTarget  # type: ignore[import-not-found]
    except ImportError as exc:  # a checkout without the cluster target: say so, no traceback
        raise ConfigError(f"--cluster is not available here ({exc}); use --local") from None

    namespace = dev_namespace(session.settings, session.environ)
    return ClusterTarget(session, namespace=namespace, images=tuple(names), synced=synced)
