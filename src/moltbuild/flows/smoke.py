"""`invoke smoke`: the release check by itself, on the last build's images, on any image by
reference (pulled first), or (`--static`) on the Dockerfiles and manifests without running."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from moltbuild import report
from moltbuild.backends.contract import Backend, RunSpec
from moltbuild.backends.selection import choose_backend, make_backend, statuses_for
from moltbuild.dockerfile import Dockerfile
from moltbuild.errors import ConfigError, JobError
from moltbuild.flows.context import Session
from moltbuild.project import ImageConfig, load_images, select_images
from moltbuild.refs import ImageRef
from moltbuild.smoke.probes import smoke_plan_for, static_problems


def _configs(session: Session, only: str) -> list[ImageConfig]:
    images = load_images(session.settings.project_root)
    return select_images(images, only=only)


def static_check(session: Session, *, only: str = "") -> list[str]:
    """Every k8s probe's port must be one the image EXPOSEs (or the manifest names); a line each."""
    root = session.settings.project_root
    problems = []
    for cfg in _configs(session, only):
        smoke_plan_for(root, cfg)  # named ports resolve, the smoke table and HEALTHCHECK parse
        exposed = set(Dockerfile.read(cfg.dockerfile).stage(cfg.target).exposed)  # the stage it is built from
        problems += static_problems(root, cfg.manifest_name, exposed)
    if problems:
        raise ConfigError("\n".join(problems))
    session.runner.say("probes: every probe port is EXPOSEd by its image")
    return problems


def run_checks(session: Session, *, only: str = "", ref: str | None = None) -> None:
    """Start each image (the last build's, or `ref`) and check it as a build would before pushing."""
    settings, runner = session.settings, session.runner
    root = settings.project_root
    name, _ = choose_backend("auto", statuses_for("auto", runner, settings, session.storage), session.storage)
    backend = make_backend(name, runner, settings, session.storage)
    if not backend.keeps_images:
        raise ConfigError(f"the {name} backend keeps no local image to run; smoke needs buildah or docker")
    configs = _configs(session, only)
    if ref and len(configs) != 1:
        raise ConfigError("--ref checks one image: name it with --only NAME (its probes come from k8s/)")
    if ref:
        targets = [(configs[0], ImageRef.parse(ref, "--ref"))]
    else:
        records = {r.name: r for r in report.require(report.default_path(root), [c.name for c in configs])}
        targets = []
        for cfg in configs:
            rec = records.get(cfg.name)
            if rec is None or not (rec.image_id or rec.digest):
                raise ConfigError(
                    f"{cfg.name}: no built image in build/images.json; run `invoke build` or pass --ref"
                )
            image = rec.image_id or str(rec.ref.with_digest(rec.digest or ""))
            targets.append((cfg, image))
    with tempfile.TemporaryDirectory(prefix="moltbuild-") as tmp:
        backend.open(RunSpec(Path(tmp), purpose="invoke smoke"))
        with contextlib.closing(backend):  # releases the store's run lock
            _check_all(backend, targets, settings, root)


def _check_all(backend: Backend, targets: list, settings, root: Path) -> None:
    runner = backend.runner
    runtime = backend.runtime()
    from moltbuild.smoke.run import run_smoke

    for cfg, image in targets:
        prefix = f"[{cfg.name}] "
        if isinstance(image, ImageRef):
            insecure = settings.allows_plain_http(image.host)
            pull = [
                "pull",
                *(["--tls-verify=false"] if insecure and runtime.argv[0] == "podman" else []),
                str(image),
            ]
            runtime(*pull, timeout=1800)
            image = str(image)
        plan = smoke_plan_for(root, cfg)
        try:
            outcome = run_smoke(runtime, cfg.name, image, plan, runner.say, prefix)
        except JobError as exc:  # a build names the image itself; here the line must
            raise JobError(f"{cfg.name}: {exc.message}") from None
        runner.say(f"{prefix}smoke: {outcome.summary}")
