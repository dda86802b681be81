"""`invoke verify`, the registry part: is what we recorded (the report) and what we deploy (targets
the caller reads from the deployment model) really in the registry, with the expected digest?"""

from __future__ import annotations

import concurrent.futures as cf
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from moltbuild import report
from moltbuild.errors import ConfigError, MoltbuildError, RegistryError
from moltbuild.refs import ImageRef
from moltbuild.registry.auth import Registries
from moltbuild.registry.session import UnresolvedHost
from moltbuild.settings import Settings
from moltbuild.system.tables import render_table

PASSING = ("ok", "unsigned")  # unsigned: nothing configures signing (supply.check.Policy)


@dataclass
class Target:
    origin: str  # "report", or the file that deploys it: the `images:` entry's, else the manifest's
    image: str
    ref: ImageRef  # with the tag or digest to look up
    expected: str | None  # digest, or None: must merely exist (or what the report recorded for ref)
    unpushed: str = ""  # why an image meant to be pushed was not: fails without asking the registry
    unpinned: str = ""  # why a deployed image of ours is not pinned: fails without asking either


@dataclass
class Check:
    origin: str
    image: str
    ref: str
    expected: str
    actual: str
    verdict: str  # ok | unsigned (passes) | missing | mismatch | error | not-pushed | not-pinned | unattested
    reason: str


def report_targets(path: Path) -> list[Target]:
    records = report.require(path)
    targets = [
        Target("report", r.name, r.ref.with_tag(tag), r.digest)
        for r in records
        if r.outcome.in_registry
        for tag in r.tags
    ]
    targets += [
        Target("report", r.name, r.ref.with_tag(r.pin_tag), None, _why_unpushed(r))
        for r in records
        if r.push and not r.outcome.in_registry
    ]
    if not targets:
        raise ConfigError(f"{path} records no pushed image; run `invoke build --push` first")
    return targets


def _why_unpushed(record: report.ImageRecord) -> str:
    first = record.error.splitlines()[0][:160] if record.error else ""
    what = f"the run failed: {first}" if first else "the run ended before its push"
    return f"meant to be pushed, never was ({what}); fix it, then `invoke push` or build again"


def check(target: Target, clients: Registries) -> Check:
    ref = str(target.ref)
    expected = target.expected or "(exists)"
    if target.unpushed:
        return Check(target.origin, target.image, ref, "(pushed)", "-", "not-pushed", target.unpushed)
    if target.unpinned:
        return Check(target.origin, target.image, ref, "(pinned)", "-", "not-pinned", target.unpinned)
    try:
        client = clients.client(target.ref.host)  # GET: the manifest's bytes are hashed, not trusted
        with client.operation(f"verify {ref}"):
            found = client.manifest(target.ref.repository, target.ref.reference, method="GET")
    except UnresolvedHost as exc:
        return Check(target.origin, target.image, ref, expected, "-", "error", _unresolved(exc, target))
    except MoltbuildError as exc:
        return Check(target.origin, target.image, ref, expected, "-", "error", exc.message)
    if found is None:
        return Check(
            target.origin,
            target.image,
            ref,
            expected,
            "-",
            "missing",
            "the registry has no such digest" if target.ref.digest else "the registry has no such tag",
        )
    if target.expected and found.digest != target.expected:
        return Check(
            target.origin,
            target.image,
            ref,
            expected,
            found.digest,
            "mismatch",
            "the registry serves another digest",
        )
    return Check(target.origin, target.image, ref, expected, found.digest, "ok", "")


def _unresolved(exc: UnresolvedHost, target: Target) -> str:
    """The DNS failure, naming where the host came from: the report was written with
    MOLTBUILD_REGISTRY; a deployed image's host is written in its kustomization or manifest."""
    if target.origin == "report":
        return exc.message
    return (
        f"{exc.host}: the name does not resolve (DNS); the host comes from {target.origin} "
        f"({target.image}): check it there, or the network's DNS"
    )


def verify(
    settings: Settings,
    *,
    report_path: Path | None = None,
    deployed: list[Target] | None = None,
    workers: int = 8,
    registries: Registries,
) -> list[Check]:
    """Check the report's images (when there is a report, or nothing `deployed`) and the
    `deployed` ones; a deployed tag the report recorded must have the recorded digest."""
    path = report_path or report.default_path(settings.project_root)
    targets: list[Target] = []
    known: dict[str, str] = {}
    if path.is_file() or deployed is None:
        targets += report_targets(path)
        known = {str(t.ref): t.expected for t in targets if t.expected}
    for target in deployed or ():
        targets.append(target if target.expected else replace(target, expected=known.get(str(target.ref))))
    with cf.ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda t: check(t, registries), targets))


def render(checks: list[Check], as_json: bool = False) -> str:
    if as_json:
        return json.dumps(
            {"ok": all(c.verdict in PASSING for c in checks), "checks": [asdict(c) for c in checks]}, indent=2
        )
    rows = [(c.origin, c.ref, _short(c.expected), _short(c.actual), c.verdict, c.reason) for c in checks]
    return render_table(("from", "image", "expected", "actual", "verdict", "reason"), rows)


def _short(digest: str) -> str:
    return digest[:19] if digest.startswith("sha256:") else digest


def raise_on_failure(checks: list[Check]) -> None:
    bad = [c for c in checks if c.verdict not in PASSING]
    if bad:
        first = bad[0]
        raise RegistryError(
            f"{len(bad)} of {len(checks)} checks failed; first: {first.ref} "
            f"({first.origin}): {first.verdict}: {first.reason}"
        )
