"""`invoke clean`: prune the images this tool created in local stores, never anything else;
and the storage figures `doctor` shows."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from moltbuild import report
from moltbuild.backends.contract import RunSpec
from moltbuild.backends.local import LocalBackend
from moltbuild.backends.selection import BACKENDS, backend_class, make_backend
from moltbuild.errors import ConfigError, MoltbuildError
from moltbuild.flows.context import Session
from moltbuild.system import owners
from moltbuild.system.tables import human_size


@contextlib.contextmanager
def _stores(session: Session, backend: str | None) -> Iterator[list[tuple[str, LocalBackend]]]:
    local = [n for n in BACKENDS if backend_class(n).keeps_images]
    if backend and backend not in local:
        raise ConfigError(f"--backend {backend}: clean works on local stores: {', '.join(local)}")
    names = [backend] if backend else [n for n in local if session.backends[n].works]
    with owners.private_dir() as tmp:
        stores = []
        for name in names:
            impl = make_backend(name, session.runner, session.settings, session.storage)
            (Path(tmp) / name).mkdir()
            impl.prepare(RunSpec(Path(tmp) / name))
            stores.append((name, impl))
        yield stores


def clean(
    session: Session,
    *,
    everything: bool = False,
    backend: str | None = None,
    dry_run: bool = False,
) -> dict[str, list[str]]:
    """Remove what this tool created and nothing needs (with `everything`: all it created)."""
    say = session.runner.say
    removed: dict[str, list[str]] = {}
    what = "every image this tool created" if everything else "images this tool created that nothing uses"
    with _stores(session, backend) as stores:
        if not stores:
            say("no local image store works here (buildah or docker): nothing to clean")
        for name, impl in stores:
            store = impl.store()
            if dry_run:
                doomed = store.doomed(everything=everything)
                say(f"{name}: would remove {len(doomed)} {what}")
                for image_id in doomed:
                    say(f"  {image_id[:12]}")
                removed[name] = doomed
                continue
            with store.exclusive("invoke clean", say):
                impl.reap_leftovers()  # containers of killed runs first: they pin images
                gone = store.prune(everything=everything, supersede=_last_builds(session))
            stats = store.stats()
            say(
                f"{name}: removed {len(gone)} {what}; {stats.images} image(s) left "
                f"({stats.ours} created by this tool), {human_size(stats.size_bytes)}"
            )
            removed[name] = gone
    return removed


def _last_builds(session: Session) -> dict[str, set[str]]:
    """The images build/images.json records stay; other tool-made tags of their repositories go."""
    try:
        records = report.read(report.default_path(session.settings.project_root))
    except MoltbuildError:
        return {}  # no usable report: nothing counts as superseded
    return {r.ref.name: {str(r.ref.with_tag(t)) for t in r.tags} for r in records if r.image_id and r.ok}


def storage_stats(session: Session) -> dict[str, dict[str, int]]:
    """Per working local store: image count, how many this tool created, bytes on disk."""
    out = {}
    try:
        with _stores(session, None) as stores:
            for name, impl in stores:
                stats = impl.store().stats()
                out[name] = {"images": stats.images, "ours": stats.ours, "size_bytes": stats.size_bytes}
    except MoltbuildError:
        pass  # doctor reports the backend's own problem already
    return out
