"""`k8s.*`: the kustomization pins what was pushed."""

from __future__ import annotations

from pathlib import Path

from invoke import Collection, task

from moltbuild.cli import count, edge, run_context


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
    from moltbuild.flows.pins import pin_images

    pin_images(
        run_context(),
        report_path=Path(report) if report else None,
        kustomization=Path(kustomization) if kustomization else None,
        only=only,
        no_digest=no_digest,
        dry_run=dry_run,
    )


@task(
    help={
        "kustomization": "file to commit (default k8s/kustomization.yml)",
        "message": "commit message",
        "remote": "remote to push to (default origin)",
        "branch": "branch to push to (default: the current one, or GITHUB_REF_NAME)",
        "attempts": "pushes tried when the branch moves meanwhile (default 3)",
        "pull-request": "push the pin to a branch moltbuild/pins-<sha7> and open a pull request "
        "(done anyway when the branch is protected)",
    }
)
@edge
def commit_pins(
    c,
    kustomization=None,
    message="Pin images built by moltbuild",
    remote="origin",
    branch=None,
    attempts="3",
    pull_request=False,
):
    """Commit the pinned kustomization alone on top of the remote branch and push it (or open a PR)."""
    from moltbuild.flows.pins import commit_pins as commit

    attempts = count(attempts, "--attempts")  # 0 would commit, push nothing and exit 0
    commit(
        run_context(),
        kustomization=Path(kustomization) if kustomization else None,
        message=message,
        remote=remote,
        branch=branch,
        attempts=attempts,
        pull_request=pull_request,
    )


ns = Collection("k8s", set_images, commit_pins)
