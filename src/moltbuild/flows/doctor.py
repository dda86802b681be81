"""`doctor`: what works here, what `auto` would pick and why, and how to fix each problem; and
`env.show`: the effective settings with their sources."""

from __future__ import annotations

import json
from typing import Any

from moltbuild.backends.selection import backend_class, choose_backend, make_backend
from moltbuild.errors import MoltbuildError
from moltbuild.flows.clean import storage_stats
from moltbuild.flows.context import Session
from moltbuild.settings import KEYS
from moltbuild.smoke import oci
from moltbuild.system.tables import human_size, render_table


def show(session: Session, *, as_json: bool = False) -> None:
    """`invoke doctor`: the settings' warnings on stderr, the findings on stdout."""
    for warning in session.settings.warnings:
        session.runner.warn(warning)
    session.runner.emit(render(collect(session), as_json=as_json))


def show_settings(session: Session) -> None:
    """`invoke env.show`: every setting, its value (secrets masked), where it came from, what it means."""
    for warning in session.settings.warnings:
        session.runner.warn(warning)
    rows = [(k, v or "(unset)", src, KEYS[k].help) for k, v, src in session.settings.as_rows()]
    session.runner.emit(render_table(("setting", "value", "source", "meaning"), rows))


def credentials_present(session: Session) -> dict[str, bool]:
    s = session.settings
    return {
        "ghcr.io (GITHUB_TOKEN)": bool(s.get("GITHUB_TOKEN")),
        "other registry (REGISTRY_USERNAME + REGISTRY_PASSWORD)": bool(
            s.get("REGISTRY_USERNAME") and s.get("REGISTRY_PASSWORD")
        ),
    }


def collect(session: Session) -> dict[str, Any]:
    statuses = session.backends
    storage = session.storage
    requested = session.settings.choice("MOLTBUILD_BACKEND")
    try:
        picked, why = choose_backend("auto", statuses, storage)
    except MoltbuildError as exc:
        picked, why = None, exc.message
    problems: list[dict[str, str]] = []
    if storage.nested:
        problems.append(
            {
                "problem": f"nested overlay: {storage.detail}",
                "fix": "build with buildah (auto does this); docker build cannot work on this storage",
            }
        )
    for status in statuses.values():
        if status.fix and not status.works:
            problems.append({"problem": f"{status.name}: {status.reason}", "fix": status.fix})
    if picked is None:
        problems.append({"problem": "no backend can build here", "fix": "invoke setup"})
    creds = credentials_present(session)
    registry = session.settings["MOLTBUILD_REGISTRY"]
    if not any(creds.values()):
        verdict = _anonymous_push(session, registry)
        if verdict:
            problems.append(
                {
                    "problem": f"no registry credentials and {verdict}",
                    "fix": "set GITHUB_TOKEN (write:packages) in .env.local, "
                    "or REGISTRY_USERNAME and REGISTRY_PASSWORD",
                }
            )
    return {
        "place": {"label": session.place.label, **vars(session.place)},
        "storage": storage.to_dict(),
        "backends": {n: s.to_dict() for n, s in statuses.items()},
        "requested_backend": requested,
        "auto": {"backend": picked, "why": why},
        "registry": {"value": registry, "source": session.settings.source("MOLTBUILD_REGISTRY")},
        "credentials": creds,
        "problems": problems,
        "warnings": session.settings.warnings,
        "images": storage_stats(session),
        "smoke": _smoke_runtime(session, picked),
    }


def _smoke_runtime(session: Session, picked: str | None) -> str:
    """Which container runtime (and OCI runtime) runs the release check here."""
    if picked is None or not backend_class(picked).keeps_images:
        return (
            f"the {picked or 'no'} backend keeps no local image: `invoke smoke --ref REF` where podman works"
        )
    try:
        return oci.doctor_line(
            make_backend(picked, session.runner, session.settings, session.storage).runtime()
        )
    except MoltbuildError as exc:
        return f"cannot tell ({exc.message.splitlines()[0]})"


def _anonymous_push(session: Session, registry: str) -> str:
    """Ask the registry, quickly, whether it takes requests without credentials: '' when it does,
    else what it answered (a local registry usually needs none)."""
    from moltbuild.plan.planner import registry_prefix
    from moltbuild.registry.auth import GHCR, registry_client

    try:
        host = registry_prefix(registry).host
    except MoltbuildError as exc:
        return f"MOLTBUILD_REGISTRY is not usable ({exc.message})"
    if host == GHCR:
        return "ghcr.io needs GITHUB_TOKEN to push"
    client = registry_client(host, session.settings)
    client.retries, client.timeout = 0, 3.0
    try:
        status = client.ping()
    except MoltbuildError as exc:
        return f"{host} could not be asked ({exc.message})"
    return "" if status < 400 else f"{host} answers HTTP {status} without them: pushing will fail"


def render(report: dict[str, Any], as_json: bool = False) -> str:
    if as_json:
        return json.dumps(report, indent=2, sort_keys=False)
    rows = [(n, _yn(b["available"]), _yn(b["works"]), b["reason"]) for n, b in report["backends"].items()]
    lines = [
        _place_line(report["place"]),
        _storage_line(report["storage"]),
        "",
        render_table(("backend", "available", "works", "reason"), rows),
        "",
        f"auto picks: {report['auto']['backend'] or 'nothing'}: {report['auto']['why']}",
        f"registry:  {report['registry']['value']} (from {report['registry']['source']})",
    ]
    lines += [
        f"creds:     {what}: {'present' if present else 'missing'}"
        for what, present in report["credentials"].items()
    ]
    lines += [_images_line(name, st) for name, st in report.get("images", {}).items()]
    lines.append(f"smoke:     {report.get('smoke', 'not asked')}")
    lines += [f"warning:   {warning}" for warning in report["warnings"]]
    if report["problems"]:
        lines += ["", "problems and fixes:"]
        lines += [f"  - {p['problem']}\n    fix: {p['fix']}" for p in report["problems"]]
    return "\n".join(lines)


def _place_line(place: dict[str, Any]) -> str:
    evidence = f" ({'; '.join(place['evidence'])})" if place["evidence"] else ""
    return f"place:    {place['label']}{evidence}"


def _storage_line(st: dict[str, Any]) -> str:
    verdict = (
        "NESTED OVERLAY" if st["nested"] else ("overlay ok" if st["overlay_ok"] else "overlay not usable")
    )
    return (
        f"storage:  {st['path']} on {st['fstype']} ({st['mount_point']}): {verdict} "
        f"[{st['method']}] -> buildah driver {st['buildah_driver']}"
    )


def _images_line(name: str, st: dict[str, Any]) -> str:
    return (
        f"images:    {name}: {st['images']} image(s), {st['ours']} created by moltbuild, "
        f"{human_size(st['size_bytes'])} on disk (`invoke clean` prunes the ones nothing needs)"
    )


def _yn(flag: bool) -> str:
    return "yes" if flag else "no"
