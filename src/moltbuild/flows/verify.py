"""`invoke verify`: every reported and every pinned image is in the registry with its digest,
and (unless `--no-attestations` or MOLTBUILD_ATTEST=off) carries a signature by the expected
signer, SLSA provenance for that digest and commit, and an SBOM (when an unsigned image fails:
`supply.check.Policy`). With `--kustomization`, what is
checked is what kustomize renders: each workload container's image, read through the deployment
model (`k8s/deployment`)."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
from pathlib import Path

from moltbuild import report
from moltbuild.errors import ConfigError
from moltbuild.flows.context import Session
from moltbuild.k8s import deployment
from moltbuild.k8s.images import split
from moltbuild.refs import ImageRef
from moltbuild.registry import verify as registry_verify
from moltbuild.registry.verify import Check, Target
from moltbuild.supply import check as supply_check
from moltbuild.supply.cosign import Cosign
from moltbuild.supply.tools import INSTALL_HINT, RegistryAccess, find_tool
from moltbuild.system import owners


def verify_and_show(
    session: Session,
    *,
    report_path: Path | None = None,
    kustomization: Path | None = None,
    attestations: bool = True,
    as_json: bool = False,
    require_signed: bool = False,
) -> None:
    """`invoke verify`: the checks on stdout, then a one-line error naming the first that failed."""
    checks = verify(
        session,
        report_path=report_path,
        kustomization=kustomization,
        attestations=attestations,
        require_signed=require_signed,
    )
    session.runner.emit(registry_verify.render(checks, as_json=as_json))
    if any(c.verdict == supply_check.UNSIGNED for c in checks):
        unchecked = supply_check.Policy.from_settings(session.settings).unchecked()
        (session.runner.warn if as_json else session.runner.emit)(unchecked)  # stdout stays JSON
    registry_verify.raise_on_failure(checks)


def verify(
    session: Session,
    *,
    report_path: Path | None = None,
    kustomization: Path | None = None,
    attestations: bool = True,
    require_signed: bool = False,
) -> list[Check]:
    """The registry checks, then (unless turned off) each digest's signature and attestations;
    `require_signed` (--require-signed) fails an unsigned image even when no setting would."""
    if require_signed and not attestations:
        raise ConfigError("--require-signed and --no-attestations contradict each other: drop one")
    root = session.settings.project_root
    path = report_path or report.default_path(root)
    deployed = None
    if kustomization is not None:
        deployed = deployed_targets(kustomization, _ours(path), root)
    checks = registry_verify.verify(
        session.settings, registries=session.registries, report_path=report_path, deployed=deployed
    )
    if not attestations or (session.settings.choice("MOLTBUILD_ATTEST") == "off" and not require_signed):
        return checks
    policy = supply_check.Policy.from_settings(session.settings, require_signed=require_signed)
    if policy.verifier and not find_tool(session.runner, "cosign"):
        raise ConfigError(f"MOLTBUILD_VERIFY_KEY/IDENTITY is set but cosign is not installed: {INSTALL_HINT}")
    commits = {
        (r.repository, r.digest): supply_check.Expected(r.revision, r.input_digest)
        for r in report.read(path)
        if r.digest
    }
    with owners.private_dir() as tmp:
        attest = _Attestations(session, policy, Path(tmp), commits)
        return attest.check_all(checks)


def _ours(report_path: Path) -> set[str]:
    """HOST/NAME of each image the report records (none without a report)."""
    return {r.ref.name for r in report.read(report_path)} if report_path.is_file() else set()


def deployed_targets(kustomization: Path, ours: set[str], root: Path | None = None) -> list[Target]:
    """One target per image the kustomization's workloads run, as kustomize renders it. An image of
    `ours` (HOST/NAME the report records) that no `images:` entry pins and no digest fixes fails."""
    model = deployment.load(kustomization, root)
    targets: dict[str, Target] = {}
    for container in model.containers:
        entry = container.entry
        origin = f"{model.rel(entry.file)} images[{entry.index}]" if entry else container.source
        ref = ImageRef.parse(container.image, entry.where if entry else f"{container.label} image")
        unpinned = ""
        if entry is None and not ref.digest and ref.name in ours:
            unpinned = (
                f"no images: entry in {model.rel(kustomization)} matches {container.written} (kustomize "
                "matches the name exactly), so it deploys that tag; pin it with `invoke k8s.set-images`"
            )
        name = entry.name if entry else split(container.written)[0]
        targets.setdefault(container.image, Target(origin, name, ref, ref.digest, unpinned=unpinned))
    if not targets:
        raise ConfigError(
            f"{model.rel(kustomization)}: renders no workload container, so nothing to verify; "
            "list the manifests under resources:"
        )
    return list(targets.values())


class _Attestations:
    """One attestation check per digest, however many tags point at it."""

    def __init__(self, session: Session, policy: supply_check.Policy, workdir: Path, commits: dict):
        self.session, self.policy, self.workdir, self.commits = session, policy, workdir, commits
        self.done: dict[str, supply_check.Finding] = {}
        self.access: dict[str, RegistryAccess] = {}

    def check_all(self, checks: list[Check], workers: int = 8) -> list[Check]:
        """Each distinct digest checked once, several at once (each is registry or cosign I/O)."""
        wanted = {}
        for found in checks:
            if found.verdict == "ok" and found.actual.startswith("sha256:"):
                ref = ImageRef.parse(found.ref, "checked reference")
                wanted.setdefault(f"{ref.name}@{found.actual}", (ref, found.actual))
        self._prepare({ref.host for ref, _ in wanted.values()})
        with cf.ThreadPoolExecutor(max_workers=max(1, min(workers, len(wanted)))) as pool:
            self.done = dict(
                zip(wanted, pool.map(lambda item: self._finding(*item), wanted.values()), strict=True)
            )
        return [self.check(c) for c in checks]

    def check(self, found: Check) -> Check:
        if found.verdict != "ok" or not found.actual.startswith("sha256:"):
            return found
        ref = ImageRef.parse(found.ref, "checked reference")
        key = f"{ref.name}@{found.actual}"
        if key not in self.done:
            self.done[key] = self._finding(ref, found.actual)
        finding = self.done[key]
        return dataclasses.replace(found, verdict=finding.verdict, reason=found.reason or finding.reason)

    def _prepare(self, hosts: set[str]) -> None:
        """cosign's registry access, once per host before the checks run at once."""
        if self.policy.verifier is None:
            return
        for host in hosts:
            self.access[host] = RegistryAccess.prepare(
                host, self.session.settings, self.workdir / host.replace(":", "_")
            )

    def _finding(self, ref: ImageRef, digest: str) -> supply_check.Finding:
        commit = self.commits.get((ref.name, digest), supply_check.Expected())
        verifier = self.policy.verifier
        if verifier is None:
            client = self.session.registries.client(ref.host)
            return supply_check.without_verifier(client, ref, digest, commit, self.policy)
        access = self.access.get(ref.host) or RegistryAccess.prepare(
            ref.host, self.session.settings, self.workdir / ref.host.replace(":", "_")
        )
        cosign = Cosign(self.session.runner, access)
        return supply_check.with_verifier(cosign, ref, digest, commit, verifier)
