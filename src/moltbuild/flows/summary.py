"""What a run ends with: a table a person can copy from (repository@digest), or the report
entries as JSON for scripts (`--json`)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from moltbuild.plan.planner import CACHE_TAG_PREFIX
from moltbuild.report import VERSION, ImageRecord, Outcome
from moltbuild.system.tables import human_size, render_table

if TYPE_CHECKING:
    from moltbuild.flows.context import Session


def result_of(record: ImageRecord) -> str:
    if record.error:
        first = record.error.splitlines()[0]
        what = "PUSH FAILED" if record.outcome is Outcome.PUSH_FAILED else "FAILED"
        return f"{what}: " + (first[:70] + "..." if len(first) > 70 else first)
    return record.outcome.value


def reference_of(record: ImageRecord) -> str:
    if record.digest:
        return f"{record.repository}@{record.digest}"
    if record.image_id:
        return f"{record.repository} (local {record.image_id.removeprefix('sha256:')[:12]})"
    return "-"


def attestation_of(record: ImageRecord) -> str:
    """One line on what the image carries: SBOM, provenance and whether they are signed."""
    if record.signature == "unsigned":
        return f"SBOM + provenance attached UNSIGNED at {record.provenance} (no signing key)"
    return f"signed ({record.signature}); SBOM + provenance attested at {record.provenance}"


def render(records: Iterable[ImageRecord], report_path: Path | None, log_dir: Path | None) -> str:
    records = list(records)
    rows = [
        (
            r.name,
            reference_of(r),
            ", ".join(t for t in r.tags if not t.startswith(CACHE_TAG_PREFIX)),
            result_of(r),
            human_size(r.size_bytes) if r.size_bytes is not None else "-",
            f"{r.duration_s:.1f}s",
        )
        for r in records
    ]
    lines = [render_table(("image", "reference", "tags", "result", "size", "time"), rows)]
    lines += [f"{r.name}: layer cache: {r.cache}" for r in records if r.cache]
    lines += [f"{r.name}: {attestation_of(r)}" for r in records if r.signature]
    for r in records:
        if r.error:
            log = r.log_path or (str(log_dir / f"{r.name}.log") if log_dir else "")
            lines.append(f"{r.name}: {r.error.splitlines()[0]}" + (f" (log: {log})" if log else ""))
    where = [f"report: {report_path}"] if report_path else []
    where += [f"logs: {log_dir}/"] if log_dir else []
    if where:
        lines.append("; ".join(where))
    return "\n".join(lines)


def as_json_text(records: Iterable[ImageRecord]) -> str:
    return json.dumps({"version": VERSION, "images": [r.to_dict() for r in records]}, indent=2)


def finish(session: Session, records: list[ImageRecord], path: Path, as_json: bool) -> None:
    """The run's last words: the table, or the report entries as JSON on stdout."""
    if as_json:
        session.runner.emit(as_json_text(records))
    elif records:
        session.runner.say("\n" + render(records, path, path.parent / "logs"))
