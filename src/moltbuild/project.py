"""Project config: [tool.moltbuild] in pyproject.toml (registry, images)."""

from __future__ import annotations

import copy
import functools
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moltbuild.errors import ConfigError

# With no [tool.moltbuild] registry: images are named for a local registry (`invoke pipeline` starts
# its own); pushing anywhere else needs the project's registry in pyproject.toml.
DEFAULT_REGISTRY = "localhost:5000/moltbuild"
_WHERE = "pyproject.toml [tool.moltbuild.images"
IMAGE_KEYS = {
    *("repository", "context", "dockerfile", "build_args", "platforms", "target"),
    *("smoke", "secrets", "dev"),
}
DEV_KEYS = {"sync"}  # [tool.moltbuild.images.NAME.dev]
SECRET_SOURCES = ("env:", "file:")
_SECRET_ID = re.compile(r"^[A-Za-z0-9_.-]+$")
# A build arg so named holds a credential: build args land in the image history and the provenance.
_SECRET_ARG = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|_KEY$", re.IGNORECASE)


@dataclass(frozen=True)
class ImageConfig:
    name: str
    repository: str
    context: Path  # absolute
    dockerfile: Path  # absolute
    build_args: dict[str, str] = field(default_factory=dict)
    platforms: tuple[str, ...] = ()
    target: str | None = None
    # extra smoke checks: {path, port}, {command}, {env} (env values stand in for secrets: not shown)
    smoke: dict[str, Any] | None = field(default=None, repr=False)
    manifest_name: str = ""  # the name k8s/ manifests use for the image (REGISTRY/REPOSITORY)
    # build secrets: id -> where its value is read at build time ("env:VAR" or "file:PATH" relative
    # to the project); never the value itself
    secrets: dict[str, str] = field(default_factory=dict)
    # `invoke dev`: (glob below the context, directory in the container) a changed file is copied to
    sync: tuple[tuple[str, str], ...] = ()


def find_project_root(start: Path | None = None) -> Path:
    """The nearest directory at or above `start` whose pyproject.toml has [tool.moltbuild]."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        pyproject = candidate / "pyproject.toml"
        if pyproject.is_file() and "moltbuild" in _load(pyproject).get("tool", {}):
            return candidate
    raise ConfigError(
        f"no pyproject.toml with [tool.moltbuild] at or above {here}; run from the monorepo checkout"
    )


def _load(pyproject: Path) -> dict[str, Any]:
    stat = pyproject.stat()
    return copy.deepcopy(_parsed(pyproject, stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=4)  # settings, images and the plan all read it: parse it once per change
def _parsed(pyproject: Path, mtime_ns: int, size: int) -> dict[str, Any]:
    try:
        return tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{pyproject}: invalid TOML ({exc}); fix the syntax") from None


def clear_cache() -> None:
    """Forget parsed pyproject files (system/state.begin_command() calls it for each command)."""
    _parsed.cache_clear()


def read_tool_table(project_root: Path) -> dict[str, Any]:
    pyproject = project_root / "pyproject.toml"
    if not pyproject.is_file():
        return {}
    return dict(_load(pyproject).get("tool", {}).get("moltbuild", {}))


def load_images(project_root: Path, tool: dict[str, Any] | None = None) -> dict[str, ImageConfig]:
    tool = read_tool_table(project_root) if tool is None else tool
    images = {name: _image(project_root, tool, name, raw) for name, raw in (tool.get("images") or {}).items()}
    if not images:
        raise ConfigError(f"{_WHERE}.*] declares no images; add [tool.moltbuild.images.NAME]")
    return images


def _image(project_root: Path, tool: dict[str, Any], name: str, raw: dict[str, Any]) -> ImageConfig:
    """One [tool.moltbuild.images.NAME] table, checked: each problem names the table and key."""
    unknown = set(raw) - IMAGE_KEYS
    if unknown:
        raise ConfigError(
            f"{_WHERE}.{name}] has unknown key {sorted(unknown)[0]!r}; "
            f"allowed: {', '.join(sorted(IMAGE_KEYS))}"
        )
    for required in ("repository", "context"):
        if not raw.get(required):
            raise ConfigError(f"{_WHERE}.{name}] needs `{required}`")
    context = (project_root / raw["context"]).resolve()
    if not context.is_dir():
        raise ConfigError(f"{_WHERE}.{name}] context {raw['context']!r} is not a directory")
    named = raw.get("dockerfile", "Dockerfile")
    dockerfile = (context / named).resolve()
    if not dockerfile.is_file():
        raise ConfigError(
            f"{_WHERE}.{name}] dockerfile {named!r}: {dockerfile} does not exist; "
            "create it or set `dockerfile` to a file in the context"
        )
    platforms = raw.get("platforms", ())
    if isinstance(platforms, str):
        platforms = parse_only(platforms)  # a comma list, blanks dropped
    build_args = {str(k): str(v) for k, v in (raw.get("build_args") or {}).items()}
    _refuse_secret_args(name, build_args)
    return ImageConfig(
        name=name,
        repository=raw["repository"],
        context=context,
        dockerfile=dockerfile,
        build_args=build_args,
        platforms=tuple(platforms),
        target=raw.get("target"),
        smoke=raw.get("smoke"),
        manifest_name=f"{manifest_registry(tool)}/{raw['repository']}",
        secrets=_secrets(name, raw.get("secrets")),
        sync=sync_rules(name, raw.get("dev")),
    )


def looks_secret(arg: str) -> bool:
    """A build arg whose name says it holds a credential (TOKEN, PASSWORD, SECRET, *_KEY)."""
    return bool(_SECRET_ARG.search(arg))


def _refuse_secret_args(name: str, build_args: dict[str, str]) -> None:
    for key, value in build_args.items():
        if value and looks_secret(key):
            raise ConfigError(
                f"{_WHERE}.{name}] build_args {key!r} looks like a secret: a build arg stays in the image "
                f"history and the provenance; pass it as a build secret instead: secrets = {{{key.lower()} = "
                f'"env:{key}"}} and RUN --mount=type=secret,id={key.lower()} (docs/secrets.md)'
            )


def _secrets(name: str, raw: Any) -> dict[str, str]:
    """`secrets = {ID = "env:VAR" | "file:PATH"}`, checked; values are read only when building."""
    where = f"{_WHERE}.{name}] secrets"
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f'{where} must be a table, e.g. secrets = {{npmrc = "env:NPM_TOKEN"}}')
    found: dict[str, str] = {}
    for key, source in raw.items():
        if not _SECRET_ID.match(str(key)):
            raise ConfigError(f"{where}: id {key!r} may hold only letters, digits, '.', '_' and '-'")
        if not isinstance(source, str) or not source.startswith(SECRET_SOURCES) or not source[5:].strip():
            raise ConfigError(
                f'{where}.{key}: say where the value comes from, "env:VARIABLE" or "file:PATH" '
                "(relative to the repository); never the value itself (not shown here)"
            )
        found[str(key)] = source
    return found


def sync_rules(name: str, dev: Any) -> tuple[tuple[str, str], ...]:
    """[tool.moltbuild.images.NAME.dev] sync = {"GLOB" = "/DIR/"}: each glob relative to the
    context (`**` crosses directories), each destination an absolute directory in the container."""
    where = f"{_WHERE}.{name}.dev]"
    if dev is None:
        return ()
    if not isinstance(dev, dict):
        raise ConfigError(
            f'{where[:-1]}] dev must be a table, e.g. dev = {{ sync = {{ "src/*.css" = "/www/" }} }}'
        )
    unknown = set(dev) - DEV_KEYS
    if unknown:
        raise ConfigError(f"{where} has unknown key {sorted(unknown)[0]!r}; allowed: sync")
    sync = dev.get("sync", {})
    if not isinstance(sync, dict):
        raise ConfigError(
            f'{where} sync must be a table of "GLOB" = "/DIR/", e.g. {{ "src/*.css" = "/www/" }}'
        )
    rules = []
    for glob, dest in sync.items():
        if not glob.strip() or glob.startswith("/") or ".." in glob.split("/"):
            raise ConfigError(
                f"{where} sync key {glob!r} must be a glob relative to the context, e.g. src/*.css"
            )
        if not isinstance(dest, str) or not dest.startswith("/"):
            raise ConfigError(
                f"{where} sync {glob!r} = {dest!r}: the destination must be an absolute directory in the "
                'container, e.g. "/www/"'
            )
        rules.append((glob, dest))
    return tuple(rules)


def manifest_registry(tool: dict[str, Any]) -> str:
    """The registry the manifests name images with: the project's own, whatever a run pushes to."""
    return str(tool.get("registry") or DEFAULT_REGISTRY).rstrip("/")


def parse_only(value: str | Iterable[str] | None) -> list[str]:
    """The one reading of `--only`: a comma list (or several), blanks dropped, order kept."""
    parts = [value] if isinstance(value, str) else list(value or ())
    names = [n.strip() for part in parts for n in part.split(",")]
    return list(dict.fromkeys(n for n in names if n))


def select_images(images: dict[str, ImageConfig], *, only: str | Iterable[str] = ()) -> list[ImageConfig]:
    """The images `--only` names (all of them when it names none), in the project's order."""
    wanted = parse_only(only)
    unknown = [n for n in wanted if n not in images]
    if unknown:
        raise ConfigError(
            f"unknown image {unknown[0]!r}; known: {', '.join(images)} "
            "(the tables of pyproject.toml [tool.moltbuild.images])"
        )
    return [images[n] for n in images if not wanted or n in wanted]
