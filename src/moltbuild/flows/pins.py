"""`k8s.set-images` and `k8s.commit-pins`: pin what was pushed in the kustomization, then commit
that one file on top of the remote branch (or open a pull request with it)."""

from __future__ import annotations

from pathlib import Path

from moltbuild.ci import github, pins
from moltbuild.flows.context import Session
from moltbuild.k8s import kustomize


def pin_images(
    session: Session,
    *,
    report_path: Path | None = None,
    kustomization: Path | None = None,
    only: str = "",
    no_digest: bool = False,
    dry_run: bool = False,
) -> list[str]:
    """Every pushed image of the report pinned by tag and digest (a diff only, with dry_run)."""
    return kustomize.pin_pushed(
        report_path=report_path,
        kustomization=kustomization,
        only=only,
        no_digest=no_digest,
        dry_run=dry_run,
        runner=session.runner,
        images=session.images,
        root=session.settings.project_root,
    )


def commit_pins(
    session: Session,
    *,
    kustomization: Path | None,
    message: str,
    remote: str,
    branch: str | None,
    attempts: int,
    pull_request: bool,
) -> None:
    """The kustomization (default k8s/kustomization.yml) committed alone and pushed."""
    root = session.settings.project_root

    def open_pull(head: str, base: str, title: str, body: str) -> str:
        return github.client(session.settings, session.runner).pull_request(head, base, title, body)

    pins.commit_and_push(
        root,
        [kustomization or root / "k8s" / "kustomization.yml"],
        runner=session.runner,
        environ=session.environ,
        message=message,
        remote=remote,
        branch=branch,
        attempts=attempts,
        pull_request=pull_request,
        open_pull=open_pull,
    )
