"""Build, push and tag tasks."""

from __future__ import annotations

from invoke import Collection, task

from moltbuild.cli import count, edge

BUILD_HELP = {
    "push": "push every tag after building",
    "api-only": "build only the api image",
    "frontend-only": "build only the frontend image",
    "only": "comma list of image names to build",
    "tag": "extra tag (repeatable); added to the planned ones ([tool.moltbuild] tags, latest)",
    "backend": "auto|docker|buildah (default: MOLTBUILD_BACKEND or auto)",
    "platform": "comma list, e.g. linux/amd64,linux/arm64",
    "no-cache": "do not reuse cached layers",
    "jobs": "images built at once (default 2)",
    "force": "use the docker backend even on nested overlay (to build although unchanged: --rebuild)",
    "rebuild": "build even when the registry has an image with the same inputs",
    "changed": "only images whose inputs changed since --base (GitHub's event base, else HEAD^)",
    "base": "git revision --changed compares with",
    "no-smoke": "do not start the image and check its HEALTHCHECK and probe paths before the push",
    "dry-run": "print the plan and the exact commands; run nothing",
    "json": "print the report entries as JSON on stdout (progress goes to stderr)",
    "verbose": "print every command and all tool output (always in build/logs/NAME.log)",
}


@task(iterable=["tag"], help=BUILD_HELP)
@edge
def build(
    c,
    push=False,
    api_only=False,
    frontend_only=False,
    only="",
    tag=None,
    backend=None,
    platform=None,
    no_cache=False,
    jobs="2",
    force=False,
    rebuild=False,
    changed=False,
    base=None,
    no_smoke=False,
    dry_run=False,
    json=False,
    verbose=False,
):
    """Build the images (and push with --push); writes build/images.json."""
    from moltbuild.flows import build as build_mod

    build_mod.build_images(
        push=push,
        api_only=api_only,
        frontend_only=frontend_only,
        only=only,
        tags=tag,
        backend=backend,
        platform=platform,
        no_cache=no_cache,
        jobs=count(jobs, "--jobs"),
        force=force,
        rebuild=rebuild,
        changed=changed,
        base=base,
        no_smoke=no_smoke,
        dry_run=dry_run,
        as_json=json,
        verbose=verbose,
    )


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
    from moltbuild.flows import publish

    publish.push_built(only=only, dry_run=dry_run, as_json=json, verbose=verbose)


@task(help={"jobs": "images built at once (default 2)"})
@edge
def pipeline(c, jobs="2"):
    """The main job: build both images, push (embedded registry if none set), verify digests."""
    from moltbuild.flows import pipeline as pipeline_mod

    pipeline_mod.run_pipeline(jobs=count(jobs, "--jobs"))


@task(
    help={
        "base": "git revision to compare with (default: GitHub's event base, else HEAD^)",
        "json": "print machine-readable JSON",
    }
)
@edge
def changed(c, base=None, json=False):
    """Which images have inputs that changed since a base revision, and why."""
    from moltbuild.plan.changes import show_changed

    show_changed(base=base, as_json=json)


ns = Collection(build, push, pipeline, changed)
