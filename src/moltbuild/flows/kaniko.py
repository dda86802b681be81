"""`invoke kaniko.setup`: what in-cluster builds need, created or updated in the namespace."""

from __future__ import annotations

from moltbuild.flows.context import Session
from moltbuild.k8s.cluster import Cluster
from moltbuild.k8s.kaniko import registry_secret, render, setup_objects
from moltbuild.refs import registry_prefix
from moltbuild.registry.auth import preflight_push


def setup_cluster(session: Session, *, dry_run: bool = False) -> None:
    """The registry Secret, ServiceAccounts and RBAC, created or updated."""
    settings, say = session.settings, session.runner.say
    ns = settings["MOLTBUILD_KUBE_NAMESPACE"]
    host = registry_prefix(settings["MOLTBUILD_REGISTRY"]).host
    creds = preflight_push(host, settings, registries=session.registries, check_registry=False)
    objects = setup_objects(settings.project_root, ns)
    if creds:
        objects.insert(0, registry_secret(ns, {host: creds}))
    else:
        say(f"no credentials for {host}: no registry Secret (the registry must accept anonymous pushes)")
    if dry_run:
        say(f"dry run: would apply to namespace {ns} (Secret data masked):")
        render(objects, say)
        return
    cluster = Cluster(context=settings.get("MOLTBUILD_KUBE_CONTEXT"), namespace=ns, environ=session.environ)
    say(f"Namespace/{ns} {cluster.ensure_namespace()}")
    for obj in objects:
        say(f"{obj['kind']}/{obj['metadata']['name']} {cluster.apply(obj)} in {ns}")
