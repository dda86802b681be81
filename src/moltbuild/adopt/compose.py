"""What a compose file tells init: each service's `build:` (a context string, or a mapping with
context, dockerfile, args and target) as a Recipe, the repository its `image:` names, and a note
for each one init cannot use (a remote context, an inline Dockerfile, a file that is not there)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moltbuild.adopt.recipes import COMPOSE_NAMES, Recipe
from moltbuild.errors import ConfigError
from moltbuild.files import load_yaml
from moltbuild.project import looks_secret


def preferred(files: list[str]) -> list[str]:
    """One compose file per folder, the one `docker compose` would read there."""
    chosen: dict[str, str] = {}
    for rel in sorted(files, key=lambda r: COMPOSE_NAMES.index(Path(r).name)):
        chosen.setdefault(Path(rel).parent.as_posix(), rel)
    return sorted(chosen.values())


def compose_recipes(root: Path, files: list[str], notes: list[str]) -> list[Recipe]:
    """The services that build an image, in each compose file's order; what is skipped, noted."""
    found: list[Recipe] = []
    for rel in preferred(files):
        try:
            doc = load_yaml(root / rel)
        except ConfigError as exc:
            notes.append(f"{exc.message}: skipped")
            continue
        services = doc.get("services") if isinstance(doc, dict) else None
        if not isinstance(services, dict):
            notes.append(f"{rel}: no `services:` mapping; skipped")
            continue
        for name, service in services.items():
            if isinstance(service, dict) and service.get("build") is not None:
                recipe = _recipe(root, rel, str(name), service, notes)
                found += [recipe] if recipe else []
    return found


def _recipe(root: Path, rel: str, name: str, service: dict, notes: list[str]) -> Recipe | None:
    where = f"{rel} services.{name}.build"
    build = service["build"]
    spec: dict[str, Any] = {"context": build} if isinstance(build, str) else build
    if not isinstance(spec, dict):
        notes.append(f"{where}: neither a path nor a mapping; skipped")
        return None
    raw = str(spec.get("context") or ".")
    if "://" in raw or raw.startswith("git@"):
        notes.append(f"{where}: the context {raw} is not in this repository; skipped")
        return None
    if spec.get("dockerfile_inline"):
        notes.append(f"{where}: dockerfile_inline has no file to build from; skipped (write it to a file)")
        return None
    top = root.resolve()
    context = ((root / rel).parent / raw).resolve()
    dockerfile = str(spec.get("dockerfile") or "Dockerfile")
    path = (context / dockerfile).resolve()
    if not context.is_relative_to(top) or not path.is_relative_to(top) or not path.is_file():
        notes.append(f"{where}: {raw}/{dockerfile} is not a file in this repository; skipped")
        return None
    folder = context.relative_to(top).as_posix()
    return Recipe(
        path=path.relative_to(top).as_posix(),
        context="." if folder == "." else f"{folder}/",
        dockerfile=dockerfile,
        folder=name,
        origin=where,
        build_args=_args(spec.get("args"), where, notes),
        target=str(spec.get("target") or ""),
        repository=_repository(service.get("image")),
    )


def _args(raw: Any, where: str, notes: list[str]) -> tuple[tuple[str, str], ...]:
    """`args:` as a mapping or a list of KEY=VALUE; one without a value (compose takes it from the
    environment) or named like a secret is left out, with a note."""
    pairs: list[tuple[str, Any]] = []
    if isinstance(raw, dict):
        pairs = list(raw.items())
    elif isinstance(raw, list):
        pairs = [(str(item).partition("=")[0], str(item).partition("=")[2] or None) for item in raw]
    kept = []
    for key, value in pairs:
        if value is None:
            notes.append(f"{where}.args.{key}: no value (compose reads it from the environment); left out")
        elif looks_secret(str(key)):
            notes.append(
                f"{where}.args.{key}: looks like a secret; left out (declare it under `secrets`, "
                "docs/secrets.md)"
            )
        else:
            shown = str(value).lower() if isinstance(value, bool) else str(value)
            kept.append((str(key), shown))
    return tuple(kept)


def _repository(image: Any) -> str:
    """The repository an `image:` names, without registry, namespace, tag or digest."""
    if not isinstance(image, str) or not image.strip():
        return ""
    name = image.strip().split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[0].lower()
