"""`invoke verify`: is what we recorded and what we deploy really in the registry?"""

from __future__ import annotations

import concurrent.futures as cf
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from moltbuild import report
from moltbuild.errors import ConfigError, MoltbuildError, RegistryError
from moltbuild.files import load_yaml
from moltbuild.refs import DIGEST_RE, ImageRef, validate_tag
from moltbuild.registry.auth import Registries
from moltbuild.settings import Settings
from moltbuild.system.tables import render_table


@dataclass
class Target:
    origin: str  # "report" or the kustomization file name
    image: str
    ref: ImageRef  # with the tag or digest to look up
    expected: str | None  # digest, or None: must merely exist
    unpushed: str = ""  # why an image meant to be pushed was not: fails without asking the registry


@dataclass
class Check:
    origin: str
    image: str
    ref: str
    expected: str
    actual: str
    verdict: str  # ok | missing | mismatch | error | not-pushed
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


def kustomization_targets(path: Path, known: dict[str, str]) -> list[Target]:
    """Targets for every `images:` entry; `known` maps HOST/NAME:TAG -> digest from the report."""
    # Every scalar as the string it is written as: a tag like 0012345 is not the number 12345.
    doc = load_yaml(path, typ="base")
    if not isinstance(doc, dict):
        raise ConfigError(
            f"{path}: a kustomization is a mapping (images:, resources:, ...), not {_kind(doc)}"
        )
    images = doc.get("images")
    if not images:
        raise ConfigError(
            f"{path}: no `images:` entries, so nothing to verify; pin images with `invoke k8s.set-images`"
        )
    if not isinstance(images, list):
        raise ConfigError(f"{path}: `images` must be a list of name/newName/newTag/digest entries")
    targets = []
    for i, item in enumerate(images):
        if not isinstance(item, dict) or not item.get("name"):
            raise ConfigError(f"{path}: images[{i}] needs a `name`")
        where = f"{path}: images[{i}]"
        base = ImageRef.parse(str(item.get("newName") or item["name"]), f"{where}.newName").bare()
        tag = str(item["newTag"]) if item.get("newTag") else None
        digest = str(item["digest"]) if item.get("digest") else None
        if digest and not DIGEST_RE.match(digest):
            raise ConfigError(f"{where}.digest {digest!r} must look like sha256:<64 hex>")
        if tag:
            ref = base.with_tag(validate_tag(tag, f"{where}.newTag"))
        else:
            ref = base.with_digest(digest) if digest else base.with_tag("latest")
        targets.append(Target(path.name, str(item["name"]), ref, digest or known.get(str(ref))))
    return targets


def _kind(doc: object) -> str:
    return "a list" if isinstance(doc, list) else "empty" if doc is None else f"a {type(doc).__name__}"


def check(target: Target, clients: Registries) -> Check:
    ref = str(target.ref)
    expected = target.expected or "(exists)"
    if target.unpushed:
        return Check(target.origin, target.image, ref, "(pushed)", "-", "not-pushed", target.unpushed)
    try:
        client = clients.client(target.ref.host)  # GET: the manifest's bytes are hashed, not trusted
        with client.operation(f"verify {ref}"):
            found = client.manifest(target.ref.repository, target.ref.reference, method="GET")
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


def verify(
    settings: Settings,
    *,
    report_path: Path | None = None,
    kustomization: Path | None = None,
    workers: int = 8,
    registries: Registries,
) -> list[Check]:
    path = report_path or report.default_path(settings.project_root)
    targets: list[Target] = []
    known: dict[str, str] = {}
    if path.is_file() or kustomization is None:
        targets += report_targets(path)
        known = {str(t.ref): t.expected for t in targets if t.expected}
    if kustomization is not None:
        targets += kustomization_targets(kustomization, known)
    with cf.ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda t: check(t, registries), targets))


def render(checks: list[Check], as_json: bool = False) -> str:
    if as_json:
        return json.dumps(
            {"ok": all(c.verdict == "ok" for c in checks), "checks": [asdict(c) for c in checks]}, indent=2
        )
    rows = [(c.origin, c.ref, _short(c.expected), _short(c.actual), c.verdict, c.reason) for c in checks]
    return render_table(("from", "image", "expected", "actual", "verdict", "reason"), rows)


def _short(digest: str) -> str:
    return digest[:19] if digest.startswith("sha256:") else digest


def raise_on_failure(checks: list[Check]) -> None:
    bad = [c for c in checks if c.verdict != "ok"]
    if bad:
        first = bad[0]
        raise RegistryError(
            f"{len(bad)} of {len(checks)} checks failed; first: {first.ref} "
            f"({first.origin}): {first.verdict}: {first.reason}"
        )
