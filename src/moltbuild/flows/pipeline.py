"""`nox -s pipeline`: build both images, push them, read every digest back over HTTP."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from moltbuild import report
from moltbuild.flows import verify as verify_flow
from moltbuild.flows.build import build_images
from moltbuild.flows.context import Session
from moltbuild.plan.request import BuildRequest
from moltbuild.refs import registry_prefix
from moltbuild.registry import verify
from moltbuild.registry.local import LocalRegistry

EMBEDDED = "pipeline: embedded registry"


def verify_report(session: Session, path: Path) -> None:
    """Every tag of every pushed image, HEAD over HTTP with the OCI/Docker Accept headers."""
    checks = verify_flow.verify(session, report_path=path)
    session.runner.say(verify.render(checks))
    verify.raise_on_failure(checks)


def _path(session: Session) -> str:
    """The configured registry's namespace path: the embedded registry keeps the image names."""
    return registry_prefix(session.settings["MOLTBUILD_REGISTRY"]).repository


def run_pipeline(session: Session, request: BuildRequest) -> None:
    """Build and push (to an embedded registry when none is configured), then verify."""
    root = session.settings.project_root
    runner = session.runner
    registry = None
    if session.settings.source("MOLTBUILD_REGISTRY").startswith(("default", "pyproject")):
        registry = LocalRegistry(root / "build" / "registry", runner).start()
        insecure = ",".join(
            filter(None, [session.settings.get("MOLTBUILD_INSECURE_REGISTRIES"), registry.host])
        )
        # Through the settings layer, with its own source name: the process environment is untouched;
        # the same context (runner, images), its settings and registry clients derived.
        session = session.with_overrides(
            {
                "MOLTBUILD_REGISTRY": (f"{registry.host}/{_path(session)}", EMBEDDED),
                "MOLTBUILD_INSECURE_REGISTRIES": (insecure, EMBEDDED),
            }
        )
        runner.say(
            f"pipeline: no registry configured; embedded registry on {registry.host} "
            f"(data under build/registry)"
        )
    try:
        build_images(session, replace(request, push=True))
        runner.say("\npipeline: reading every digest back from the registry")
        verify_report(session, report.default_path(root))
        runner.say("pipeline: all images built, pushed and verified")
    finally:
        if registry:
            registry.stop()
