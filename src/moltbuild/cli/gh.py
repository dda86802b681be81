"""`gh.*`: the build workflow on GitHub, over its REST API (no `gh` CLI needed)."""

from __future__ import annotations

from invoke import Collection, task

from moltbuild.cli import count, edge, run_context, seconds


@task(
    iterable=["input"],
    help={
        "workflow": "workflow file name (default build-images.yml)",
        "ref": "branch or tag to run on (default main)",
        "input": "workflow input KEY=VALUE (repeatable), e.g. --input images=api",
        "watch": "follow the run's jobs and steps until it ends; exit non-zero unless it succeeds",
        "timeout": "seconds to wait for the run (default 3600)",
        "interval": "seconds between polls (default 5)",
    },
)
@edge
def dispatch(
    c, workflow="build-images.yml", ref="main", input=None, watch=False, timeout="3600", interval="5"
):
    """Start the build workflow on GitHub (and with --watch, follow it to the end)."""
    from moltbuild.flows.workflow import dispatch_workflow

    limits = {"timeout": seconds(timeout, "--timeout"), "interval": seconds(interval, "--interval")}
    dispatch_workflow(run_context(), workflow=workflow, ref=ref, inputs=input or [], watch=watch, **limits)


@task(
    help={
        "workflow": "workflow file name (default build-images.yml)",
        "limit": "how many runs, newest first (default 10; fetched in pages of 100)",
    }
)
@edge
def runs(c, workflow="build-images.yml", limit="10"):
    """List the recent runs of the build workflow."""
    from moltbuild.flows.workflow import list_runs

    limit = count(limit, "--limit")  # checked before the repository is looked up
    list_runs(run_context(), workflow=workflow, limit=limit)


ns = Collection("gh", dispatch, runs)
