"""On GitHub Actions the tasks report themselves: a step summary table and job outputs, written
whenever GITHUB_STEP_SUMMARY / GITHUB_OUTPUT are set (also under act)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from moltbuild import report
from moltbuild.report import ImageRecord


def summary_markdown(title: str, records: Iterable[ImageRecord]) -> str:
    lines = [f"### {title}", "", "| image | tags | pushed as | | time |", "| --- | --- | --- | --- | --- |"]
    for r in records:
        where = f"`{r.repository}@{r.digest}`" if r.digest else "(not pushed)"
        how = r.result(120)
        lines.append(
            f"| {r.name} | {', '.join(f'`{t}`' for t in r.tags)} | {where} | {how} | {r.duration_s:.1f}s |"
        )
    return "\n".join(lines) + "\n\n"


def outputs(records: Iterable[ImageRecord]) -> dict[str, str]:
    chosen = list(records)
    out = {f"{r.name}-digest": r.digest or "" for r in chosen}
    out["pushed"] = "true" if any(r.outcome.in_registry for r in chosen) else "false"
    out["images"] = ",".join(r.name for r in chosen if r.outcome.in_registry)
    # The whole records, one line: a later job (the pin) rebuilds build/images.json from it.
    out["report"] = report.dumps(chosen, one_line=True)
    return out


def publish(title: str, records: Iterable[ImageRecord], environ: Mapping[str, str]) -> None:
    chosen = list(records)
    if environ.get("GITHUB_STEP_SUMMARY") and chosen:
        with Path(environ["GITHUB_STEP_SUMMARY"]).open("a", encoding="utf-8") as fh:
            fh.write(summary_markdown(title, chosen))
    if environ.get("GITHUB_OUTPUT"):
        with Path(environ["GITHUB_OUTPUT"]).open("a", encoding="utf-8") as fh:
            for key, value in outputs(chosen).items():
                fh.write(f"{key}={value}\n")
