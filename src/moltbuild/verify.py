"""`invoke verify`: is what we recorded and what we deploy really in the registry?"""

from __future__ import annotations

import concurrent.futures as cf
import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from . import report
from .baseimages import parse_ref
from .credentials import credentials_for, registry_client
from .errors import ConfigError, MoltbuildError, RegistryError
from .registry import RegistryClient
from .settings import Settings
from .tables import render_table


@dataclass
class Target:
    origin: str  # "report" or the kustomization file name
    image: str
    repository: str  # HOST/NAME
    reference: str  # tag or digest
    expected: str | None  # digest, or None: must merely exist


@dataclass
class Check:
    origin: str
    image: str
    ref: str
    expected: str
    actual: str
    verdict: str  # ok | missing | mismatch | error
    reason: str


def report_targets(path: Path) -> list[Target]:
    targets = []
    for entry in report.entries(path):
        if not entry.get("pushed"):
            continue
        for tag in entry["tags"]:
            targets.append(Target("report", entry["name"], entry["repository"], tag, entry["digest"]))
    if not targets:
        raise ConfigError(f"{path} records no pushed image; run `invoke build --push` first")
    return targets


def kustomization_targets(path: Path, known: dict[str, str]) -> list[Target]:
    """Targets for every `images:` entry; `known` maps repository:tag -> digest from the report."""
    try:
        doc = YAML(typ="safe").load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the kustomization ({exc.strerror})") from None
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML; fix the syntax") from None
    images = (doc or {}).get("images") or []
    if not isinstance(images, list):
        raise ConfigError(f"{path}: `images` must be a list of name/newName/newTag/digest entries")
    targets = []
    for i, item in enumerate(images):
        if not isinstance(item, dict) or not item.get("name"):
            raise ConfigError(f"{path}: images[{i}] needs a `name`")
        parsed = parse_ref(str(item.get("newName") or item["name"]))
        repository = f"{parsed.registry}/{parsed.path}"
        digest = item.get("digest")
        tag = item.get("newTag")
        reference = str(tag) if tag else (digest or "latest")
        expected = digest or known.get(f"{repository}:{reference}")
        targets.append(Target(path.name, str(item["name"]), repository, reference, expected))
    return targets


class _Clients:
    """One client (one kept-alive Session) per registry host, shared by the worker threads."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._clients: dict[str, RegistryClient] = {}
        self._lock = threading.Lock()

    def get(self, host: str) -> RegistryClient:
        with self._lock:
            if host not in self._clients:
                creds = credentials_for(host, self.settings)
                self._clients[host] = registry_client(host, self.settings, creds)
            return self._clients[host]


def check(target: Target, clients: _Clients) -> Check:
    host, name = target.repository.split("/", 1)
    sep = "@" if target.reference.startswith("sha256:") else ":"
    ref = f"{target.repository}{sep}{target.reference}"
    expected = target.expected or "(exists)"
    try:
        found = clients.get(host).manifest(name, target.reference)
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
            "the registry has no such tag" if sep == ":" else "the registry has no such digest",
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
) -> list[Check]:
    path = report_path or report.default_path(settings.project_root)
    targets: list[Target] = []
    known: dict[str, str] = {}
    if path.is_file() or kustomization is None:
        targets += report_targets(path)
        known = {f"{t.repository}:{t.reference}": t.expected for t in targets if t.expected}
    if kustomization is not None:
        targets += kustomization_targets(kustomization, known)
    clients = _Clients(settings)
    with cf.ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda t: check(t, clients), targets))


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
