"""`invoke push` and `invoke tag`: act on images a previous build recorded in the report."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from . import report, tagging
from .backends import make_backend
from .backends.base import Backend
from .credentials import preflight_push
from .errors import ConfigError, MoltbuildError
from .plan import ImagePlan
from .session import Session


def _image_from_entry(entry: dict) -> ImagePlan:
    return ImagePlan(
        name=entry["name"],
        repository=entry["repository"],
        tags=list(entry["tags"]),
        context=Path("."),
        dockerfile=Path("Dockerfile"),
        build_args={},
        labels={},
        target=None,
        platforms=list(entry.get("platforms") or []),
        input_digest=entry["input_digest"],
        bases=[],
    )


def _built_entries(path: Path, names: list[str] | None) -> list[dict]:
    found = [e for e in report.entries(path, names) if e.get("status") in ("built", "pushed")]
    if not found:
        raise ConfigError(
            f"{path} records no built image{' named ' + ', '.join(names) if names else ''}; "
            "run `invoke build` first"
        )
    return found


def push_built(
    *,
    only: str = "",
    dry_run: bool = False,
    add_tags: list[str] | None = None,
    report_path: Path | None = None,
    require_tags: bool = False,
) -> list[dict]:
    """Push images recorded in the report (optionally under extra tags); update their entries."""
    if require_tags and not add_tags:
        raise ConfigError("pass at least one --tag (or --source REF to retag in the registry)")
    session = Session.create(dry_run=dry_run)
    runner = session.runner
    path = report_path or report.default_path(session.settings.project_root)
    entries = _built_entries(path, only.split(",") if only else None)
    for tag in add_tags or []:
        tagging.validate_tag(tag)
    updated = []
    with tempfile.TemporaryDirectory(prefix="moltbuild-") as tmp:
        ready: dict[tuple[str, str], Backend] = {}  # one login per backend and registry
        for entry in entries:
            host = entry["repository"].split("/", 1)[0]
            backend = ready.get((entry["backend"], host))
            if backend is None:
                backend = make_backend(entry["backend"], runner, session.settings, session.storage)
                backend.prepare(Path(tempfile.mkdtemp(dir=tmp)), None)
                creds = preflight_push(host, session.settings, check_registry=not dry_run)
                if creds:
                    backend.login(host, creds)
                ready[(entry["backend"], host)] = backend
            image = _image_from_entry(entry)
            new = [t for t in add_tags or [] if t not in image.tags]
            if new:
                backend.add_tags(image, new)
                image.tags += new
            start = time.monotonic()
            try:
                digest = backend.push(image, prefix=f"[{image.name}] ", log_path=None)
            except MoltbuildError as exc:
                raise MoltbuildError(f"{image.name}: {exc.message}", exit_code=exc.exit_code) from None
            if entry.get("digest") and digest and entry["pushed"] and digest != entry["digest"]:
                runner.say(f"[{image.name}] note: digest changed from {entry['digest']} to {digest}")
            entry = {
                **entry,
                "tags": image.tags,
                "digest": digest or entry.get("digest"),
                "pushed": True,
                "status": "pushed",
                "duration_s": round(time.monotonic() - start, 2),
            }
            if not dry_run:
                report.update_image(path, entry)
            updated.append(entry)
            runner.say(f"[{image.name}] pushed {', '.join(image.tags)} -> {digest or '(dry run)'}")
    return updated
