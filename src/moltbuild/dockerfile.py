"""One reading of a Dockerfile, for everything that needs one: the bases to pull (plan), the
stage an image is built from (`target`, else the last), what that stage EXPOSEs and its
HEALTHCHECK (smoke, static check), which build ARGs it declares, and the `RUN --mount`s of type
secret and cache (the secrets a build must be given, the caches it keeps)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from moltbuild.errors import ConfigError
from moltbuild.refs import ImageRef

_VAR_RE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
_ARG_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:=(.*))?$")


@dataclass(frozen=True)
class Stage:
    index: int
    base: str  # the image (or earlier stage) it starts FROM, build args substituted
    name: str = ""  # FROM ... AS name
    line: int = 0
    exposed: frozenset[int] = frozenset()  # numeric EXPOSE ports (variables are not resolved)
    healthcheck: str | None = None  # the HEALTHCHECK arguments, as written; None: none here
    args: frozenset[str] = frozenset()  # ARGs declared in this stage

    def label(self) -> str:
        return self.name or f"#{self.index}"


@dataclass(frozen=True)
class Mount:
    """One `RUN --mount=type=secret|cache,...`: its type, the secret's id (or the cache's target),
    the line, and whether BuildKit would run the step without it (`required=false`, secrets only)."""

    type: str
    id: str
    line: int
    optional: bool = False


@dataclass(frozen=True)
class Dockerfile:
    path: Path
    stages: tuple[Stage, ...]
    global_args: dict[str, str] = field(default_factory=dict)  # ARGs before the first FROM
    mounts: tuple[Mount, ...] = ()  # RUN --mount of type secret or cache, in order

    @property
    def secret_mounts(self) -> tuple[Mount, ...]:
        return tuple(m for m in self.mounts if m.type == "secret")

    @classmethod
    def read(cls, path: Path, build_args: dict[str, str] | None = None) -> Dockerfile:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text ({exc.reason}); re-save it as UTF-8") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the Dockerfile ({exc.strerror})") from None
        return parse(text, path, build_args or {})

    @property
    def declared_args(self) -> frozenset[str]:
        return frozenset(self.global_args).union(*(s.args for s in self.stages))

    def stage(self, target: str | None = None, origin: str = "target") -> Stage:
        """The stage an image is built from: `target`, else the last. An unknown target is one
        line naming the file and the stages there are."""
        if not target:
            return self.stages[-1]
        for stage in self.stages:
            if stage.name == target:
                return stage
        names = ", ".join(s.name for s in self.stages if s.name) or "none is named (FROM ... AS NAME)"
        raise ConfigError(f"{self.path}: no stage named {target!r} ({origin}); stages: {names}")

    def bases(self) -> list[str]:
        """External images the FROM lines name, in order, once each (stages and scratch left out)."""
        names = {s.name for s in self.stages if s.name}
        found: list[str] = []
        for stage in self.stages:
            if stage.base.lower() != "scratch" and stage.base not in names and stage.base not in found:
                ImageRef.parse(stage.base, f"{self.path}:{stage.line}: FROM", default_tag="latest")
                found.append(stage.base)
        return found


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(line number, instruction) with continuations joined and comments dropped."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        out.append((start, pending + stripped))
        pending = ""
    if pending.strip():
        out.append((start, pending))
    return out


def parse(text: str, path: Path, build_args: dict[str, str]) -> Dockerfile:
    reading = _Reading(path, build_args)
    for number, line in _logical_lines(text):
        keyword, _, rest = line.partition(" ")
        instruction = _INSTRUCTIONS.get(keyword.upper())
        if instruction:
            instruction(reading, rest.strip(), number)
    return reading.result()


class _Reading:
    """One parse under way: the ARGs before the first FROM, then each stage as it opens."""

    def __init__(self, path: Path, given: dict[str, str]):
        self.path, self.given = path, given
        self.global_args: dict[str, str] = {}
        self.stages: list[dict] = []
        self.mounts: list[Mount] = []

    def run(self, rest: str, number: int) -> None:
        for word in rest.split():
            if not word.startswith("--"):
                break  # the options come first; the command follows
            if word.startswith("--mount="):
                mount = _mount(word.removeprefix("--mount="), number, self.path)
                self.mounts += [mount] if mount else []

    def arg(self, rest: str, number: int) -> None:
        for m in filter(None, (_ARG_RE.match(word) for word in rest.split())):
            if self.stages:
                self.stages[-1]["args"].add(m.group(1))
            else:
                self.global_args[m.group(1)] = self.given.get(m.group(1), (m.group(2) or "").strip("\"'"))

    def from_(self, rest: str, number: int) -> None:
        self.stages.append(_from(rest, number, self.stages, self.global_args, self.path))

    def expose(self, rest: str, number: int) -> None:
        if self.stages:
            ports = (w.split("/")[0] for w in rest.split())
            self.stages[-1]["exposed"] |= {int(p) for p in ports if p.isdigit()}

    def healthcheck(self, rest: str, number: int) -> None:
        if self.stages:
            self.stages[-1]["healthcheck"] = rest

    def result(self) -> Dockerfile:
        if not self.stages:
            raise ConfigError(
                f"{self.path}: no FROM instruction; every stage starts FROM an image or scratch"
            )
        frozen = tuple(
            Stage(**{**s, "exposed": frozenset(s["exposed"]), "args": frozenset(s["args"])})
            for s in self.stages
        )
        return Dockerfile(self.path, frozen, self.global_args, tuple(self.mounts))


_INSTRUCTIONS = {
    "ARG": _Reading.arg,
    "FROM": _Reading.from_,
    "EXPOSE": _Reading.expose,
    "HEALTHCHECK": _Reading.healthcheck,
    "RUN": _Reading.run,
}


def _mount(spec: str, number: int, path: Path) -> Mount | None:
    """A secret or cache mount (others: None). A secret's id defaults to its target's file name,
    as BuildKit reads it; a secret with neither is refused here, naming the line."""
    opts: dict[str, str] = {}
    for part in spec.split(","):
        key, _, value = part.partition("=")
        opts[key.strip().lower()] = value.strip().strip("\"'")
    kind = opts.get("type", "bind")
    if kind == "cache":
        return Mount("cache", opts.get("id") or opts.get("target") or opts.get("dst", ""), number)
    if kind != "secret":
        return None
    secret_id = opts.get("id") or opts.get("target", opts.get("dst", "")).rstrip("/").rsplit("/", 1)[-1]
    if not secret_id:
        raise ConfigError(f"{path}:{number}: RUN --mount=type=secret names no id; add id=NAME")
    return Mount("secret", secret_id, number, optional=opts.get("required", "").lower() == "false")


def _from(rest: str, number: int, stages: list[dict], args: dict[str, str], path: Path) -> dict:
    words = [w for w in rest.split() if not w.startswith("--platform=")]
    if not words:
        raise ConfigError(f"{path}:{number}: FROM names no image")
    base = _VAR_RE.sub(lambda m: args.get(m.group(1), ""), words[0])
    named = len(words) > 2 and words[1].upper() == "AS"
    # FROM an earlier stage starts from its image: its EXPOSE and HEALTHCHECK carry over
    parent = next((s for s in reversed(stages) if s["name"] and s["name"] == base), None)
    exposed, healthcheck = (set(parent["exposed"]), parent["healthcheck"]) if parent else (set(), None)
    return {
        "index": len(stages),
        "base": base,
        "name": words[2] if named else "",
        "line": number,
        "exposed": exposed,
        "healthcheck": healthcheck,
        "args": set(),
    }
