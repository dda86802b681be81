"""Build, push and tag tasks. The build flags are declared once, in cli/flags.py."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from invoke import Collection, task

from moltbuild.cli import edge, flags, run_context, verbose_flag

BUILD_FLAGS = (
    "push",
    "api_only",
    "frontend_only",
    "only",
    "no_deps",
    "tag",
    "backend",
    "platform",
    "no_cache",
    "jobs",
    "force",
    "rebuild",
    "changed",
    "base",
    "no_smoke",
    "dry_run",
    "json",
    "verbose",
)


@flags.command(BUILD_FLAGS)
def build(c: Any, **given: Any) -> None:
    """Build the images (and push with --push); writes build/images.json."""
    from moltbuild.flows.build import build_images

    request, settings = flags.build_request(given)
    build_images(run_context(settings), request)


@task(
    help={
        "only": "comma list of image names",
        "dry-run": "print the commands; run nothing",
        "json": "print the report entries as JSON on stdout (progress goes to stderr)",
        "verbose": "print every command and all tool output",
    }
)
@edge
def push(c, only="", dry_run=False, json=False, verbose=False):
    """Push the images recorded in build/images.json by an earlier build."""
    from moltbuild.flows.publish import push_built

    push_built(run_context(verbose_flag(verbose)), only=only, dry_run=dry_run, as_json=json)


@flags.command(["jobs"])
def pipeline(c: Any, **given: Any) -> None:
    """The main job: build every image, push (embedded registry if none set), verify digests."""
    from moltbuild.flows.pipeline import run_pipeline

    request, _ = flags.build_request(given)
    run_pipeline(run_context(), replace(request, push=True))


@task(
    help={
        "base": "git revision to compare with (default: GitHub's event base, else HEAD^)",
        "json": "print machine-readable JSON",
    }
)
@edge
def changed(c, base=None, json=False):
    """Which images have inputs that changed since a base revision, and why."""
    from moltbuild.flows.changed import show_changed

    show_changed(run_context(), base=base, as_json=json)


ns = Collection(build, push, pipeline, changed)
