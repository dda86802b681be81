"""Registry tasks: verify, tag. No Docker needed."""

from __future__ import annotations

from pathlib import Path

from invoke import Collection, task

from moltbuild.cli import edge, run_context
from moltbuild.cli.flags import helps


@task(
    help={
        "report": "report to check (default build/images.json)",
        "kustomization": "also check every image this kustomization references",
        "json": "print machine-readable JSON",
        "no-attestations": "only digests: skip the signature, provenance and SBOM checks",
        **helps("require_signed"),
    }
)
@edge
def verify(c, report=None, kustomization=None, json=False, no_attestations=False, require_signed=False):
    """Check every reported/deployed image:tag: in the registry with its digest, signed, with
    SLSA provenance for that digest and commit and an SBOM attached."""
    from moltbuild.flows.verify import verify_and_show

    verify_and_show(
        run_context(),
        report_path=Path(report) if report else None,
        kustomization=Path(kustomization) if kustomization else None,
        attestations=not no_attestations,
        as_json=json,
        require_signed=require_signed,
    )


@task(
    iterable=["tag"],
    help={
        "tag": "tag to add (repeatable)",
        "source": "retag in the registry: REGISTRY/NAME:TAG (or @DIGEST) to copy from; no pull, no daemon",
        "only": "without --source: comma list of image names from the last build",
        "dry-run": "print the commands; run nothing",
        "json": "without --source: the report entries as JSON on stdout (progress goes to stderr)",
    },
)
@edge
def tag(c, tag=None, source=None, only="", dry_run=False, json=False):
    """Add tags: to any image with --source, else to the last build's images; in the registry, no push."""
    from moltbuild.flows.retag import tag_images

    tag_images(run_context(), tag or [], source=source, only=only, dry_run=dry_run, as_json=json)


@task(
    help={
        "only": "comma list of image names (default: all)",
        "ref": "check this image reference (pulled first) instead of the last build's",
        "static": "check the Dockerfiles and manifests only (probe ports EXPOSEd); run nothing",
    }
)
@edge
def smoke(c, only="", ref=None, static=False):
    """Start the built images and check their HEALTHCHECK and k8s probe paths (as builds do)."""
    from moltbuild.flows import smoke as checks

    if static:
        checks.static_check(run_context(), only=only)
    else:
        checks.run_checks(run_context(), only=only, ref=ref)


ns = Collection(verify, tag, smoke)
