"""`kaniko.*`: build inside the cluster, from a devpod or anywhere with a kubeconfig."""

from __future__ import annotations

from invoke import Collection, task

from moltbuild.cli import count, edge, run_context

KUBE_HELP = {
    "namespace": "namespace of the Jobs, Secret and RBAC (default MOLTBUILD_KUBE_NAMESPACE or moltbook)",
    "context": "kubeconfig context (default MOLTBUILD_KUBE_CONTEXT or the current one)",
}


@task(help={**KUBE_HELP, "dry-run": "print the manifests (Secret masked); apply nothing"})
@edge
def setup(c, namespace=None, context=None, dry_run=False):
    """Create or update the registry Secret, ServiceAccounts and RBAC kaniko Jobs need."""
    from moltbuild.flows.kaniko import setup_cluster

    setup_cluster(run_context(kube_flags(namespace, context)), dry_run=dry_run)


@task(
    iterable=["tag"],
    help={
        **KUBE_HELP,
        "api-only": "build only the api image",
        "frontend-only": "build only the frontend image",
        "only": "comma list of image names to build",
        "push": "push every tag (the default; --no-push builds in the cluster and keeps nothing)",
        "tag": "extra tag (repeatable)",
        "no-cache": "no registry layer cache",
        "rebuild": "build even when the registry has an image with the same inputs",
        "timeout": "seconds a Job may take (default MOLTBUILD_KANIKO_TIMEOUT or 1800)",
        "keep": "keep the finished Jobs (debugging)",
        "jobs": "images built at once (default 2)",
        "dry-run": "print the plan and the Job manifests; create nothing",
    },
)
@edge
def build(
    c,
    api_only=False,
    frontend_only=False,
    only="",
    tag=None,
    no_cache=False,
    rebuild=False,
    timeout=None,
    namespace=None,
    context=None,
    keep=False,
    jobs="2",
    dry_run=False,
    push=True,
):
    """Build and push the images as Kaniko Jobs in the cluster; writes build/images.json."""
    from moltbuild.flows.build import build_images
    from moltbuild.plan.request import BuildRequest, selection

    request = BuildRequest(
        push=push,
        only=selection(only, api_only=api_only, frontend_only=frontend_only),
        tags=tuple(tag or ()),
        no_cache=no_cache,
        rebuild=rebuild,
        jobs=count(jobs, "--jobs"),
        dry_run=dry_run,
    )
    settings = {
        **kube_flags(namespace, context),
        "MOLTBUILD_BACKEND": ("kaniko", "kaniko.build"),
        "MOLTBUILD_KANIKO_TIMEOUT": (timeout, "--timeout"),
        "MOLTBUILD_KANIKO_KEEP": ("1" if keep else None, "--keep"),
    }
    build_images(run_context(settings), request)


def kube_flags(namespace: str | None, context: str | None) -> dict[str, tuple[str | None, str]]:
    flags = {
        "MOLTBUILD_KUBE_NAMESPACE": (namespace, "--namespace"),
        "MOLTBUILD_KUBE_CONTEXT": (context, "--context"),
    }
    return {k: v for k, v in flags.items() if v[0]}


ns = Collection("kaniko", setup, build)
