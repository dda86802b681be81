"""Build, push and tag tasks."""

from __future__ import annotations

from invoke import Collection, task

from moltbuild.cli import count, edge, run_context, verbose_flag

BUILD_HELP = {
    "push": "push every tag after building",
    "api-only": "build only the api image",
    "frontend-only": "build only the frontend image",
    "only": "comma list of image names to build",
    "tag": "extra tag (repeatable); added to the planned ones ([tool.moltbuild] tags, latest)",
    "backend": "auto|docker|buildah (default: MOLTBUILD_BACKEND or auto)",
    "platform": "comma list, e.g. linux/amd64,linux/arm64",
    "no-cache": "do not reuse cached layers, local or in the registry (REPO/cache)",
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
    from moltbuild.flows.build import build_images
    from moltbuild.plan.request import BuildRequest, selection

    request = BuildRequest(
        push=push,
        only=selection(only, api_only=api_only, frontend_only=frontend_only),
        tags=tuple(tag or ()),
        platform=platform,
        no_cache=no_cache,
        jobs=count(jobs, "--jobs"),
        force=force,
        rebuild=rebuild,
        changed=changed,
        base=base,
        smoke=not no_smoke,
        dry_run=dry_run,
        as_json=json,
    )
    session = run_context({"MOLTBUILD_BACKEND": (backend, "--backend"), **verbose_flag(verbose)})
    build_images(session, request)


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


@task(help={"jobs": "images built at once (default 2)"})
@edge
def pipeline(c, jobs="2"):
    """The main job: build both images, push (embedded registry if none set), verify digests."""
    from moltbuild.flows.pipeline import run_pipeline
    from moltbuild.plan.request import BuildRequest

    request = BuildRequest(push=True, jobs=count(jobs, "--jobs"))
    run_pipeline(run_context(), request)


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
