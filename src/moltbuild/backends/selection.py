"""Backends: a registry dict, a factory, and the one rule for what `auto` picks."""

from __future__ import annotations

import concurrent.futures as cf
import importlib
from collections.abc import Iterable

from moltbuild.backends.contract import Backend, BackendStatus
from moltbuild.errors import ConfigError, GuardError
from moltbuild.settings import Settings
from moltbuild.system.host import StorageVerdict
from moltbuild.system.processes import Runner

# Imported on first use: a command that needs one backend (or none) loads no other.
BACKENDS: dict[str, str | type[Backend]] = {
    "docker": "moltbuild.backends.docker:DockerBackend",
    "buildah": "moltbuild.backends.buildah:BuildahBackend",
    "kaniko": "moltbuild.backends.kaniko:KanikoBackend",
}
AUTO_ORDER = ("docker", "buildah")  # kaniko is chosen explicitly: it needs a cluster


def make_backend(
    name: str, runner: Runner, settings: Settings, storage: StorageVerdict, *, dry_run: bool = False
) -> Backend:
    return backend_class(name)(runner, settings, storage, dry_run=dry_run)


def backend_class(name: str) -> type[Backend]:
    try:
        entry = BACKENDS[name]
    except KeyError:
        raise ConfigError(f"unknown backend {name!r}; choose one of auto, {', '.join(BACKENDS)}") from None
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module), attr)
    return entry


def probe_all(
    runner: Runner, settings: Settings, storage: StorageVerdict, names: Iterable[str] | None = None
) -> dict[str, BackendStatus]:
    """Status of each named backend (all by default), probed concurrently: each may wait on a
    daemon or a cluster that does not answer."""
    wanted = [n for n in BACKENDS if names is None or n in set(names)]
    with cf.ThreadPoolExecutor(max_workers=len(wanted) or 1) as pool:
        found = pool.map(lambda n: make_backend(n, runner, settings, storage).status(), wanted)
        return dict(zip(wanted, found, strict=True))


def statuses_for(
    requested: str, runner: Runner, settings: Settings, storage: StorageVerdict
) -> dict[str, BackendStatus]:
    """Only what choosing `requested` needs: `auto` looks at docker and buildah, not the cluster;
    buildah or kaniko only at themselves; docker at the others too, to name them if refused."""
    names = (
        {requested} if requested in ("buildah", "kaniko") else set(AUTO_ORDER) | {requested} & set(BACKENDS)
    )
    return probe_all(runner, settings, storage, names)


def choose_backend(
    requested: str,
    statuses: dict[str, BackendStatus],
    storage: StorageVerdict,
    *,
    force: bool = False,
    dry_run: bool = False,
) -> tuple[str, str]:
    """(backend, why). `auto`: docker where a daemon answers on sane storage, else buildah."""
    if requested == "auto":
        return _auto(statuses)
    if requested not in statuses:
        raise ConfigError(f"unknown backend {requested!r}; choose one of auto, {', '.join(BACKENDS)}")
    status = statuses[requested]
    if requested == "docker" and storage.nested and not force:
        _refuse_nested_docker(statuses, storage)
    _refuse_broken(status, dry_run)
    return requested, _requested_why(requested, status, storage)


def _refuse_nested_docker(statuses: dict[str, BackendStatus], storage: StorageVerdict) -> None:
    works = [n for n, s in statuses.items() if s.works and n != "docker"]
    raise GuardError(
        f"refusing the docker backend: {storage.path} is on nested overlay and docker build "
        f"fails there; works here: {', '.join(works) or 'nothing yet (invoke setup)'}; "
        "pass --force to try anyway"
    )


def _requested_why(requested: str, status: BackendStatus, storage: StorageVerdict) -> str:
    """Why the requested backend runs: it works, or (a dry run) only its commands are shown."""
    if not (status.available and status.works):  # only a dry run gets here: it renders commands
        what = "not available here" if not status.available else "it does not work here"
        return f"{requested} requested; {what} ({status.reason}): dry run only"
    if requested == "docker" and storage.nested:
        return f"docker requested with --force despite nested overlay at {storage.path}"
    return f"{requested} requested ({status.reason})"


def _auto(statuses: dict[str, BackendStatus]) -> tuple[str, str]:
    for name in AUTO_ORDER:
        if statuses[name].works:
            skipped = [f"{n}: {statuses[n].reason}" for n in AUTO_ORDER[: AUTO_ORDER.index(name)]]
            why = f"auto picked {name} ({statuses[name].reason})"
            return name, why + (f"; skipped {'; '.join(skipped)}" if skipped else "")
    reasons = "; ".join(f"{n}: {statuses[n].reason}" for n in AUTO_ORDER)
    raise GuardError(f"no backend works here ({reasons}); run `invoke doctor` for fixes")


def _refuse_broken(status: BackendStatus, dry_run: bool) -> None:
    """A backend that is missing or cannot build here stops a real run, with its fix."""
    if dry_run:
        return
    if not status.available:
        raise GuardError(f"backend {status.name} is not available: {status.reason}; fix: {status.fix}")
    if not status.works:  # e.g. the docker CLI is here but no daemon answers
        fix = f"; fix: {status.fix}" if status.fix else ""
        raise GuardError(f"backend {status.name} does not work here: {status.reason}{fix}")
