"""Run a build plan: log in, pull bases, build images in parallel, push, record the report."""

from __future__ import annotations

import concurrent.futures as cf
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import report
from .backends import make_backend
from .backends.base import Backend
from .credentials import preflight_push, registry_client
from .errors import BuildError, CommandError, MoltbuildError
from .plan import INPUT_DIGEST_LABEL, BuildPlan, ImagePlan, cache_tag, make_plan, render_plan
from .registry import RegistryClient
from .runner import terminate_all
from .session import Session
from .tables import render_table

MIRROR_HINT = (
    "set MOLTBUILD_BASE_MIRROR=HOST[:PORT]/PREFIX to pull Docker Hub bases through a mirror you can reach"
)


@dataclass
class Outcome:
    image: ImagePlan
    ok: bool
    digest: str = ""
    image_id: str = ""
    pushed: bool = False
    skipped: bool = False
    duration_s: float = 0.0
    error: str = ""


def report_entry(plan: BuildPlan, out: Outcome) -> dict[str, Any]:
    img = out.image
    return {
        "name": img.name,
        "repository": img.repository,
        "tags": img.tags,
        "digest": out.digest or None,
        "input_digest": img.input_digest,
        "backend": plan.backend,
        "pushed": out.pushed,
        "platforms": img.platforms or [plan.native_platform],
        "duration_s": round(out.duration_s, 2),
        "skipped": out.skipped,
        "status": "pushed" if out.pushed else ("built" if out.ok else "failed"),
        "image_id": out.image_id or None,
        "revision": plan.git.sha,
        "backend_reason": plan.backend_reason,
        **({"error": out.error} if out.error else {}),
    }


def reuse_unchanged(client: RegistryClient, img: ImagePlan, say: Callable[[str], None]) -> Outcome | None:
    """When the registry already has an image built from the same inputs, tag it remotely."""
    start = time.monotonic()
    name = img.repository.split("/", 1)[1]
    cached = cache_tag(img.input_digest)
    found = client.manifest(name, cached)
    if found is None:
        return None
    config = client.image_config(name, cached) or {}
    labels = (config.get("config") or {}).get("Labels") or {}
    if labels.get(INPUT_DIGEST_LABEL) != img.input_digest:
        say(f"[{img.name}] {cached} exists but its label does not match; building")
        return None
    for tag in img.tags:
        if tag != cached:
            client.copy(name, cached, name, tag)
    say(f"[{img.name}] unchanged inputs: reused {found.digest[:19]}, tagged {', '.join(img.tags)}")
    return Outcome(
        img, ok=True, digest=found.digest, pushed=True, skipped=True, duration_s=time.monotonic() - start
    )


def _pull_bases(backend: Backend, plan: BuildPlan, images: list[ImagePlan]) -> None:
    needed = {base for img in images for base in img.bases}
    for base, source in plan.pulls.items():
        if base not in needed:
            continue
        users = ", ".join(i.name for i in images if base in i.bases)
        try:
            backend.pull_base(base, source)
        except CommandError as exc:
            last = (exc.tail.strip().splitlines() or ["no output"])[-1][:200]
            via = f" through the mirror as {source}" if plan.mirror and source != base else ""
            raise BuildError(
                f"cannot pull base image {base}{via} (needed by {users}): {last}; "
                + (f"check that {source} exists in the mirror" if via else MIRROR_HINT)
            ) from None


def _build_one(backend: Backend, plan: BuildPlan, img: ImagePlan, log_dir: Path | None) -> Outcome:
    prefix = f"[{img.name}] "
    log_path = None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{img.name}.log"
        log_path.write_text("")
    start = time.monotonic()
    out = Outcome(img, ok=False)
    try:
        backend.build(img, no_cache=plan.no_cache, prefix=prefix, log_path=log_path)
        out.image_id = backend.image_id(img)
        out.ok = True
        if plan.push:
            out.digest = backend.push(img, prefix=prefix, log_path=log_path)
            out.pushed = True
    except MoltbuildError as exc:
        tail = getattr(exc, "tail", "")
        out.error = exc.message + (f"\n{tail}" if tail and tail not in exc.message else "")
    out.duration_s = time.monotonic() - start
    return out


def execute(session: Session, plan: BuildPlan, *, report_path: Path | None = None) -> list[Outcome]:
    """Reuse what the registry already has, build the rest in parallel, record every outcome."""
    runner, settings = session.runner, session.settings
    report_path = report_path or report.default_path(settings.project_root)
    backend = make_backend(plan.backend, runner, settings, session.storage)
    plan.native_platform = backend.native_platform()
    host = plan.registry.split("/", 1)[0]
    creds = preflight_push(host, settings, check_registry=not runner.dry_run) if plan.push else None

    def record(out: Outcome) -> None:
        if not runner.dry_run:
            report.update_image(report_path, report_entry(plan, out), version=report.VERSION)

    outcomes: list[Outcome] = []
    if plan.push and not plan.rebuild and not runner.dry_run:
        client = registry_client(host, settings, creds)
        outcomes = [o for img in plan.images if (o := reuse_unchanged(client, img, runner.say))]
        for out in outcomes:
            record(out)
    reused = {o.image.name for o in outcomes}
    to_build = [img for img in plan.images if img.name not in reused]
    log_dir = None if runner.dry_run else report_path.parent / "logs"
    if to_build:
        with tempfile.TemporaryDirectory(prefix="moltbuild-") as tmp:  # 0700: auth files live here
            backend.prepare(Path(tmp), plan.mirror)
            if creds:
                backend.login(host, creds)
            _pull_bases(backend, plan, to_build)
            outcomes += _build_parallel(backend, plan, to_build, log_dir, record, runner.say)
    outcomes.sort(key=lambda o: o.image.name)
    _raise_for_failures(plan, outcomes, log_dir)
    return outcomes


def _build_parallel(
    backend: Backend,
    plan: BuildPlan,
    images: list[ImagePlan],
    log_dir: Path | None,
    record: Callable[[Outcome], None],
    say: Callable[[str], None],
) -> list[Outcome]:
    """`plan.jobs` images at once; each outcome is recorded the moment it is known."""
    outcomes = []
    pool = cf.ThreadPoolExecutor(max_workers=min(plan.jobs, len(images)))
    futures = [pool.submit(_build_one, backend, plan, img, log_dir) for img in images]
    try:
        for fut in cf.as_completed(futures):
            out = fut.result()
            outcomes.append(out)
            record(out)
            say(f"[{out.image.name}] {'ok' if out.ok else 'FAILED'} in {out.duration_s:.1f}s")
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        terminate_all()
        raise
    pool.shutdown(wait=True)
    return outcomes


def _raise_for_failures(plan: BuildPlan, outcomes: list[Outcome], log_dir: Path | None) -> None:
    failed = [o for o in outcomes if not o.ok or (plan.push and not o.pushed)]
    if failed:
        first = failed[0]
        names = ", ".join(o.image.name for o in failed)
        raise BuildError(
            f"{len(failed)} image(s) failed: {names}; {first.image.name}: {first.error}"
            + (f"\n(full log: {log_dir / (first.image.name + '.log')})" if log_dir else "")
        )


def summary(outcomes: list[Outcome]) -> str:
    rows = [
        (
            o.image.name,
            ", ".join(o.image.tags),
            o.digest or o.image_id[:19] or "-",
            ("reused" if o.skipped else "yes") if o.pushed else "no",
            f"{o.duration_s:.1f}s",
        )
        for o in outcomes
    ]
    return render_table(("image", "tags", "digest", "pushed", "time"), rows)


def build_images(
    *,
    push: bool = False,
    api_only: bool = False,
    frontend_only: bool = False,
    only: str = "",
    tags: list[str] | None = None,
    backend: str | None = None,
    platform: str | None = None,
    no_cache: bool = False,
    jobs: int = 2,
    force: bool = False,
    rebuild: bool = False,
    dry_run: bool = False,
    session: Session | None = None,
) -> list[Outcome]:
    """`invoke build`: plan, print the plan, build (and push), write the report, print a summary."""

    cli = {"MOLTBUILD_BACKEND": (backend, "--backend")} if backend else None
    session = session or Session.create(cli=cli, dry_run=dry_run)
    plan = make_plan(
        session,
        only=only.split(",") if only else (),
        api_only=api_only,
        frontend_only=frontend_only,
        extra_tags=tags or (),
        push=push,
        platforms=platform,
        force=force,
        no_cache=no_cache,
        jobs=jobs,
        rebuild=rebuild,
    )
    session.runner.say(render_plan(plan) + "\n")
    if dry_run:
        session.runner.say("dry run: the commands that would run (secrets masked):")
    outcomes = execute(session, plan)
    if not dry_run:
        session.runner.say("\n" + summary(outcomes))
    return outcomes
