"""`nox -s pipeline`: build both images, push them, read every digest back over HTTP."""

from __future__ import annotations

from pathlib import Path

from moltbuild import report
from moltbuild.flows.build import build_images
from moltbuild.flows.context import Session
from moltbuild.project import find_project_root
from moltbuild.registry import verify
from moltbuild.registry.local import LocalRegistry

EMBEDDED = "pipeline: embedded registry"


def verify_report(session: Session, path: Path) -> None:
    """Every tag of every pushed image, HEAD over HTTP with the OCI/Docker Accept headers."""
    checks = verify.verify(session.settings, report_path=path)
    session.runner.say(verify.render(checks))
    verify.raise_on_failure(checks)


def run_pipeline(*, jobs: int = 2) -> None:
    root = find_project_root()
    probe = Session.create(project_root=root)
    runner = probe.runner
    registry = None
    overrides: dict[str, tuple[str, str]] = {}
    if probe.settings.source("MOLTBUILD_REGISTRY").startswith(("default", "pyproject")):
        registry = LocalRegistry(root / "build" / "registry", runner).start()
        insecure = ",".join(
            filter(None, [probe.settings.get("MOLTBUILD_INSECURE_REGISTRIES"), registry.host])
        )
        # Through the settings layer, with its own source name: the process environment is untouched.
        overrides = {
            "MOLTBUILD_REGISTRY": (f"{registry.host}/ardenone", EMBEDDED),
            "MOLTBUILD_INSECURE_REGISTRIES": (insecure, EMBEDDED),
        }
        runner.say(
            f"pipeline: no registry configured; embedded registry on {registry.host} "
            f"(data under build/registry)"
        )
    try:
        session = Session.create(project_root=root, overrides=overrides)
        build_images(push=True, jobs=jobs, session=session)
        runner.say("\npipeline: reading every digest back from the registry")
        verify_report(session, report.default_path(root))
        runner.say("pipeline: all images built, pushed and verified")
    finally:
        if registry:
            registry.stop()
