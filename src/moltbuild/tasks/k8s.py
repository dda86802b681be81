"""`k8s.*`: the kustomization pins what was pushed."""

from __future__ import annotations

from pathlib import Path

from invoke import Collection, task

from . import edge


@task(
    help={
        "report": "build report to read (default build/images.json)",
        "kustomization": "kustomization to edit (default k8s/kustomization.yml)",
        "only": "comma list of image names to pin",
        "no-digest": "pin by tag only (no @sha256 digest)",
        "dry-run": "print the unified diff; write nothing",
    }
)
@edge
def set_images(c, report=None, kustomization=None, only="", no_digest=False, dry_run=False):
    """Pin every pushed image of the report in the kustomization (tag and digest)."""
    from ..kustomize import pin_pushed

    pin_pushed(
        report_path=Path(report) if report else None,
        kustomization=Path(kustomization) if kustomization else None,
        only=only,
        no_digest=no_digest,
        dry_run=dry_run,
    )


ns = Collection("k8s", set_images)
