"""`kaniko.*`: build inside the cluster, from a devpod or anywhere with a kubeconfig. The build
flags are declared once, in cli/flags.py; kaniko.build takes those that apply in a cluster."""

from __future__ import annotations

from typing import Any

from invoke import Collection, task

from moltbuild.cli import edge, flags, run_context

BUILD_FLAGS = (
    "api_only",
    "frontend_only",
    "only",
    "no_deps",
    "tag",
    "no_cache",
    "rebuild",
    "timeout",
    "namespace",
    "context",
    "keep",
    "jobs",
    "dry_run",
    "push",
)


@task(
    help={
        **flags.helps("namespace", "context"),
        "dry-run": "print the manifests (Secret masked); apply nothing",
    }
)
@edge
def setup(c, namespace=None, context=None, dry_run=False):
    """Create or update the registry Secret, ServiceAccounts and RBAC kaniko Jobs need."""
    from moltbuild.flows.kaniko import setup_cluster

    setup_cluster(run_context(flags.overrides({"namespace": namespace, "context": context})), dry_run=dry_run)


@flags.command(BUILD_FLAGS, push=True)
def build(c: Any, **given: Any) -> None:
    """Build and push the images as Kaniko Jobs in the cluster; writes build/images.json."""
    from moltbuild.flows.build import build_images

    request, settings = flags.build_request(given)
    build_images(run_context({**settings, "MOLTBUILD_BACKEND": ("kaniko", "kaniko.build")}), request)


ns = Collection("kaniko", setup, build)
