"""`invoke smoke`: the release check by itself, on the last build's images, on any image by
reference (pulled first), or (`--static`) on the Dockerfiles and manifests without running."""

from __future__ import annotations

import contextlib
from pathlib import Path

from moltbuild import report
from moltbuild.backends.contract import Backend, RunSpec
from moltbuild.backends.selection import choose_backend, make_backend, statuses_for
from moltbuild.dockerfile import Dockerfile
from moltbuild.errors import ConfigError, JobError
from moltbuild.flows.context import Session
from moltbuild.k8s.manifests import load_manifests
from moltbuild.project import ImageConfig, select_images
from moltbuild.refs import ImageRef
from moltbuild.smoke.probes import SmokePlan, smoke_plan_for, static_problems
from moltbuild.system import owners


def _configs(session: Session, only: str) -> list[ImageConfig]:
    images = session.images
    return select_images(images, only=only)


def static_check(session: Session, *, only: str = "") -> list[str]:
    """Every probe port of the workloads running an image must be one the stage it is built from
    EXPOSEs; a line per problem, naming the manifest file. Says what was checked, per image."""
    root, runner = session.settings.project_root, session.runner
    manifests = load_manifests(root, runner)
    runner.say(f"manifests: {manifests.how}")
    for note in manifests.notes:
        runner.say(f"note: {note}")
    problems, probes = [], 0
    for cfg in _configs(session, only):
        dockerfile = Dockerfile.read(cfg.dockerfile)  # once: the HEALTHCHECK and the EXPOSEd ports
        plan = smoke_plan_for(root, cfg, runner, dockerfile)  # named ports resolve, the smoke table parses
        exposed = set(dockerfile.stage(cfg.target).exposed)  # the stage it is built from
        problems += static_problems(root, cfg.manifest_name, exposed, runner)
        probes += plan.probes
        for line in _account(cfg, plan):
            runner.say(line)
    if problems:
        raise ConfigError("\n".join(problems))
    if probes:
        runner.say("probes: every probe port is EXPOSEd by its image")
    else:
        runner.say("probes: none to check: no workload in k8s/ has an httpGet probe for these images")
    return problems


def _account(cfg: ImageConfig, plan: SmokePlan) -> list[str]:
    """What the static check found for one image, and what its smoke container will lack."""
    if not plan.workloads:
        return [f"{cfg.name}: note: no workload in k8s/ runs {cfg.manifest_name}; no probe to check"]
    files = ", ".join(dict.fromkeys(label.rsplit(" ", 2)[0] for label in plan.workloads))
    lines = [f"{cfg.name}: {plan.found} ({files}) checked"]
    lines += [f"{cfg.name}: note: the smoke container does not get {m}" for m in plan.env_missing]
    lines += [f"{cfg.name}: note: the smoke container does not get {m}" for m in plan.env_optional]
    return lines


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
    targets = [(configs[0], ImageRef.parse(ref, "--ref"), None)] if ref else _last_built(root, configs)
    with owners.private_dir() as tmp:
        backend.open(RunSpec(Path(tmp), purpose="invoke smoke"))
        with contextlib.closing(backend):  # releases the store's run lock
            _check_all(backend, targets, settings, root)


def _last_built(root: Path, configs: list[ImageConfig]) -> list:
    """(config, the image to run: its local ID or its digest ref, the digest ref to pull) per image
    the last build recorded."""
    records = {r.name: r for r in report.require(report.default_path(root), [c.name for c in configs])}
    targets = []
    for cfg in configs:
        rec = records.get(cfg.name)
        if rec is None or not (rec.image_id or rec.digest):
            raise ConfigError(
                f"{cfg.name}: no built image in build/images.json; run `invoke build` or pass --ref"
            )
        remote = rec.ref.with_digest(rec.digest) if rec.digest else None
        targets.append((cfg, rec.image_id or remote, remote))
    return targets


def _pull(runtime, image: ImageRef, settings) -> None:
    insecure = settings.allows_plain_http(image.host) or image.host in settings.insecure_registries
    tls = ["--tls-verify=false"] if insecure and runtime.argv[0] == "podman" else []
    runtime("pull", *tls, str(image), timeout=1800)


def _check_all(backend: Backend, targets: list, settings, root: Path) -> None:
    runner = backend.runner
    runtime = backend.runtime()
    from moltbuild.smoke.run import run_smoke

    for cfg, image, remote in targets:
        prefix = f"[{cfg.name}] "
        if isinstance(image, str) and not runtime.has_image(image):
            if remote is None:
                raise ConfigError(
                    f"{cfg.name}: its image is no longer in the local store and the report records no "
                    "digest to pull; run `invoke build` again"
                )
            image = remote  # a pruned build: the registry has it
        if isinstance(image, ImageRef):
            if remote is not None:  # a reused build (nothing local), or a pruned one
                runner.say(f"{prefix}smoke: no local image; pulling {remote}")
            _pull(runtime, image, settings)
            image = str(image)
        plan = smoke_plan_for(root, cfg, runner)
        try:
            outcome = run_smoke(runtime, cfg.name, image, plan, runner.say, prefix)
        except JobError as exc:  # a build names the image itself; here the line must
            raise JobError(f"{cfg.name}: {exc.message}") from None
        runner.say(f"{prefix}smoke: {outcome.summary}")
