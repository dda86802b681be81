"""The image graph: which images of the project start FROM another image of the project (its
registry repository, any tag or digest, after ARG substitution), the order they build in, the
images a selection needs, the images a change reaches, the refused cycle, and the Dockerfile a
dependent is built from (its FROM pinned to the base built or reused in this run). Pure."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from moltbuild.dockerfile import Dockerfile
from moltbuild.errors import ConfigError, MoltbuildError
from moltbuild.project import ImageConfig
from moltbuild.refs import ImageRef

_FROM_IMAGE = re.compile(r"^(\s*FROM\s+(?:--\S+\s+)*)(\S+)", re.IGNORECASE)


@dataclass(frozen=True)
class BaseUse:
    """A FROM naming another image of the project."""

    image: str  # the project image it names
    named: str  # as the FROM names it (ARGs substituted)
    lines: tuple[int, ...]  # the FROM lines that name it


@dataclass(frozen=True)
class BaseLink:
    """A dependent's base in the plan: where it is, its inputs, and the ref a dependent uses when
    this run does not build it (--no-deps): the base pushed with these inputs (its input tag)."""

    use: BaseUse
    ref: ImageRef  # the base's repository, no tag
    input_digest: str
    unbuilt: str  # REPO:input-<digest>

    @property
    def image(self) -> str:
        return self.use.image


def with_bases(own: str, bases: Iterable[str]) -> str:
    """A dependent's input digest: its own inputs' digest and each base's, in FROM order."""
    digest = hashlib.sha256(own.encode())
    for base in bases:
        digest.update(b"\0" + base.encode())
    return "sha256:" + digest.hexdigest()


def repositories(registry: ImageRef, configs: Iterable[ImageConfig]) -> dict[str, ImageRef]:
    """Each image's repository in the registry (MOLTBUILD_REGISTRY + its repository), no tag."""
    return {
        cfg.name: ImageRef.repository_of(
            f"{registry.name}/{cfg.repository}", f"[tool.moltbuild.images.{cfg.name}] repository"
        )
        for cfg in configs
    }


def project_bases(
    dockerfile: Dockerfile, repositories: Mapping[str, ImageRef], own: str
) -> tuple[BaseUse, ...]:
    """The FROMs of `dockerfile` that name an image of `repositories` (name -> repository, no
    tag), in order, once each. Stage names, scratch and unparsable names are not images here."""
    by_repo = {(r.host, r.repository): name for name, r in repositories.items()}
    stages = {s.name for s in dockerfile.stages if s.name}
    found: dict[str, tuple[str, list[int]]] = {}
    for stage in dockerfile.stages:
        if stage.base in stages or stage.base.lower() == "scratch":
            continue
        try:
            ref = ImageRef.parse(stage.base, "FROM", default_tag="latest")
        except MoltbuildError:
            continue  # dockerfile.bases() names it when planning
        name = by_repo.get((ref.host, ref.repository))
        if name is not None and name != own:
            found.setdefault(name, (stage.base, []))[1].append(stage.line)
        elif name == own:
            raise ConfigError(
                f"{dockerfile.path}:{stage.line}: FROM {stage.base} is the image itself ({own})"
            )
    return tuple(BaseUse(name, named, tuple(lines)) for name, (named, lines) in found.items())


def order(needs: Mapping[str, Iterable[str]]) -> list[str]:
    """Every image after the images it needs (needs outside the mapping ignored), otherwise in
    the mapping's order; a cycle is one line naming it."""
    deps = {name: [d for d in needed if d in needs] for name, needed in needs.items()}
    done: list[str] = []
    state: dict[str, int] = {}  # 1: on the path, 2: placed
    for start in deps:
        _visit(start, deps, state, done, [])
    return done


def _visit(
    name: str, deps: Mapping[str, list[str]], state: dict[str, int], done: list[str], path: list[str]
) -> None:
    # Iterative enough for 30 images; a graph is shallow (depth = levels of FROM).
    if state.get(name) == 2:
        return
    if state.get(name) == 1:
        cycle = [*path[path.index(name) :], name]
        raise ConfigError(
            f"image graph has a cycle: {' -> '.join(cycle)} (each FROM names the next); "
            "break it in one of their Dockerfiles"
        )
    state[name] = 1
    for dep in deps[name]:
        _visit(dep, deps, state, done, [*path, name])
    state[name] = 2
    done.append(name)


def needed(selected: Iterable[str], needs: Mapping[str, Iterable[str]]) -> list[str]:
    """`selected` and every image they need, transitively (bases first, by `order`)."""
    wanted: set[str] = set()
    stack = list(selected)
    while stack:
        name = stack.pop()
        if name not in wanted:
            wanted.add(name)
            stack.extend(needs.get(name, ()))
    return [n for n in order({n: needs.get(n, ()) for n in wanted})]


def dependents(changed: Iterable[str], needs: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """Every image that needs a changed one, transitively: name -> the base through which."""
    users: dict[str, list[str]] = {}
    for name, needed_ in needs.items():
        for dep in needed_:
            users.setdefault(dep, []).append(name)
    reached: dict[str, str] = {}
    stack = list(changed)
    seen = set(stack)
    while stack:
        base = stack.pop()
        for user in users.get(base, ()):
            if user not in seen:
                seen.add(user)
                reached[user] = base
                stack.append(user)
    return reached


def pinned_dockerfile(text: str, pins: Mapping[int, str]) -> str:
    """`text` with the image of the FROM at each line number (1-based) replaced by its pin."""
    lines = text.splitlines(keepends=True)
    for number, ref in pins.items():
        line = lines[number - 1]
        found = _FROM_IMAGE.match(line)
        if not found:
            raise ConfigError(f"line {number}: expected a FROM naming the base on one line")
        lines[number - 1] = found.group(1) + ref + line[found.end() :]
    return "".join(lines)


def render_edges(needs: Mapping[str, Iterable[str]]) -> str:
    """`base -> a, b; a -> c`: each base with the images FROM it ('' when none)."""
    users: dict[str, list[str]] = {}
    for name, needed_ in needs.items():
        for dep in needed_:
            users.setdefault(dep, []).append(name)
    return "; ".join(f"{base} -> {', '.join(names)}" for base, names in users.items())
