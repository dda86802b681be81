"""`gh.dispatch` and `gh.runs`: the build workflow on GitHub, started, followed and listed."""

from __future__ import annotations

from collections.abc import Iterable

from moltbuild.ci import dispatch, github
from moltbuild.flows.context import Session


def dispatch_workflow(
    session: Session,
    *,
    workflow: str,
    ref: str,
    inputs: Iterable[str],
    watch: bool,
    timeout: float,
    interval: float,
) -> None:
    """Start the workflow (and with `watch`, follow it to the end); `inputs` as KEY=VALUE."""
    pairs = github.parse_inputs(list(inputs))  # every flag checked before the repository is looked up
    dispatch.dispatch_and_watch(
        github.client(session.settings, session.runner),
        workflow=workflow,
        ref=ref,
        inputs=pairs,
        watch=watch,
        say=session.runner.say,
        timeout=timeout,
        interval=interval,
    )


def list_runs(session: Session, *, workflow: str, limit: int) -> None:
    """The workflow's recent runs, newest first, as a table on stdout."""
    client = github.client(session.settings, session.runner)
    session.runner.emit(github.render_runs(client.runs(workflow, limit=limit)))
