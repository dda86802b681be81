"""What a run ends with: a table a person can copy from (repository@digest), or the report
entries as JSON for scripts (`--json`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from moltbuild import report
from moltbuild.plan.planner import CACHE_TAG_PREFIX
from moltbuild.report import ImageRecord
from moltbuild.system.tables import human_size, render_table

if TYPE_CHECKING:
    from moltbuild.flows.context import Session


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


def _row(r: ImageRecord) -> tuple[str, ...]:
    return (
        r.name,
        reference_of(r),
        ", ".join(t for t in r.tags if not t.startswith(CACHE_TAG_PREFIX)),
        r.result(70),
        human_size(r.size_bytes) if r.size_bytes is not None else "-",
        f"{r.duration_s:.1f}s",
    )


def render(records: Iterable[ImageRecord], report_path: Path | None, log_dir: Path | None) -> str:
    records = list(records)
    lines = [render_table(("image", "reference", "tags", "result", "size", "time"), map(_row, records))]
    lines += [f"{r.name}: layer cache: {r.cache}" for r in records if r.cache]
    lines += [f"{r.name}: built FROM {_base_of(r)}" for r in records if r.base_image and r.ok]
    lines += [f"{r.name}: {attestation_of(r)}" for r in records if r.signature]
    lines += [_error_line(r, log_dir) for r in records if r.error]
    where = [f"report: {report_path}"] if report_path else []
    where += [f"logs: {log_dir}/"] if log_dir else []
    if where:
        lines.append("; ".join(where))
    return "\n".join(lines)


def _base_of(record: ImageRecord) -> str:
    """The project image it was built FROM (the image graph), as this run had it."""
    digest = record.base_digest
    if digest.startswith("sha256:") and record.digest:
        return f"{record.base_image}@{digest}"
    return f"{record.base_image} ({digest.removeprefix('sha256:')[:12] or 'as pushed'})"


def _error_line(record: ImageRecord, log_dir: Path | None) -> str:
    log = record.log_path or (str(log_dir / f"{record.name}.log") if log_dir else "")
    return f"{record.name}: {record.error.splitlines()[0]}" + (f" (log: {log})" if log else "")


def as_json_text(records: Iterable[ImageRecord]) -> str:
    return report.dumps(records)


def finish(session: Session, records: list[ImageRecord], path: Path, as_json: bool) -> None:
    """The run's last words: the table, or the report entries as JSON on stdout."""
    if as_json:
        session.runner.emit(as_json_text(records))
    elif records:
        session.runner.say("\n" + render(records, path, path.parent / "logs"))
