"""build/images.json: the single record every later step reads. Atomic, locked, validated.

Holds the record type (`ImageRecord`), an image's one outcome (`Outcome`), the one serialiser
(`document`/`dumps`: the file, `--json` and the Actions output all use it), the reader (which
still reads reports of earlier versions) and `RunFailed`, the error that carries a run's records.
Only this module reads or writes the file; everything else sees `ImageRecord`s.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from filelock import FileLock

from moltbuild.errors import BuildError, ConfigError
from moltbuild.files import room_to_write, write_atomic
from moltbuild.refs import DIGEST_RE, TAG_RE, ImageRef

VERSION = 1


class Outcome(enum.Enum):
    """What happened to one image: the one answer the console, the summary, the step summary,
    `push`, `verify` and the pin all read (the report's other fields are its evidence)."""

    BUILT = "built"  # in the local store, not pushed (no --push)
    PUSHED = "pushed"  # built and every tag pushed
    REUSED = "reused"  # the registry had the same inputs: tagged, not rebuilt
    PUSH_FAILED = "push failed"  # built, but the push failed: `invoke push` retries it
    FAILED = "failed"  # nothing usable

    @property
    def ok(self) -> bool:
        return self in (Outcome.BUILT, Outcome.PUSHED, Outcome.REUSED)

    @property
    def in_registry(self) -> bool:
        return self in (Outcome.PUSHED, Outcome.REUSED)

    @property
    def label(self) -> str:
        """How a person is shown it: failures in capitals."""
        return self.value if self.ok else self.value.upper()

    @classmethod
    def of_old_report(cls, raw: dict[str, Any]) -> Outcome:
        """Reports written before the outcome was stored: derived the way those versions did
        (their `status` said "built" after a failed push and is not read)."""
        if raw.get("error"):
            meant_to_push = raw.get("push", raw.get("pushed")) is True
            return cls.PUSH_FAILED if raw.get("image_id") and meant_to_push else cls.FAILED
        if raw.get("pushed") is True:
            return cls.REUSED if raw.get("skipped") is True else cls.PUSHED
        return cls.BUILT


@dataclass(frozen=True)
class ImageRecord:
    """One image of a run. `outcome` is what happened, stored once; `error` says why it failed
    (set exactly when the outcome is a failure); `pushed` is derived."""

    name: str
    repository: str  # HOST/PATH, no tag
    tags: list[str]
    digest: str | None  # the registry's manifest digest once pushed
    input_digest: str
    backend: str
    platforms: list[str]
    duration_s: float
    pin_tag: str  # the immutable revision tag deployments pin
    outcome: Outcome = Outcome.BUILT
    image_id: str | None = None  # the local image (or manifest list) to push later
    revision: str = ""
    backend_reason: str = ""
    log_path: str | None = None
    smoke: str = ""  # the release check before the push: "passed in 1.2s: ...", "failed: ...", "skipped ..."
    push: bool = False  # the run meant to push it (`verify` fails an entry that was meant to and was not)
    size_bytes: int | None = None  # compressed size as pushed (config + layers)
    sbom: str = ""  # where the SBOM is attached (cosign's HOST/PATH:sha256-<hex>.att)
    provenance: str = ""  # where the SLSA provenance is attached
    signature: str = ""  # HOST/PATH:sha256-<hex>.sig, "unsigned", or "" (not attested)
    error: str = ""
    cache: str = ""  # what the build did with the registry layer cache ('' when it used none)
    base_image: str = ""  # HOST/PATH of the project image it is built FROM (the image graph), if any
    base_digest: str = ""  # that base as this run built or reused it (digest, or local image ID)

    def __post_init__(self) -> None:
        if self.outcome.ok == bool(self.error):
            said = "an image that failed needs its error" if self.error == "" else "only a failure has one"
            raise ValueError(f"error: {said} (outcome {self.outcome.value!r})")
        if self.outcome.in_registry and not self.digest:
            raise ValueError("digest: a pushed image needs its digest")

    @property
    def ref(self) -> ImageRef:
        return ImageRef.parse(self.repository, "report repository")

    @property
    def pushed(self) -> bool:
        return self.outcome.in_registry

    @property
    def ok(self) -> bool:
        return self.outcome.ok

    def result(self, width: int) -> str:
        """The outcome as shown: `PUSH FAILED: <first line of the error>` (cut at `width`)."""
        if not self.error:
            return self.outcome.label
        first = self.error.splitlines()[0]
        return f"{self.outcome.label}: " + (first[:width] + "..." if len(first) > width else first)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for optional in ("error", "cache", "base_image", "base_digest"):
            if not data[optional]:
                del data[optional]
        data["outcome"] = self.outcome.value
        data["pushed"] = self.pushed  # derived, for scripts that read the file
        return data

    def but(self, **changes: Any) -> ImageRecord:
        return replace(self, **changes)


class RunFailed(BuildError):
    """One or more images failed; `records` is what the run did record (the summaries show them)."""

    def __init__(self, message: str, records: Sequence[ImageRecord]):
        super().__init__(message)
        self.records: list[ImageRecord] = list(records)


def document(records: Iterable[ImageRecord]) -> dict[str, Any]:
    """The report as JSON data: what the file, `--json` and the Actions `report` output hold."""
    return {"version": VERSION, "images": [r.to_dict() for r in records]}


def dumps(records: Iterable[ImageRecord], *, one_line: bool = False) -> str:
    if one_line:
        return json.dumps(document(records), separators=(",", ":"))
    return json.dumps(document(records), indent=2)


def _is_str(v: Any) -> bool:
    return isinstance(v, str) and bool(v)


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_text(v: Any) -> bool:
    return isinstance(v, str)


_OUTCOMES = [o.value for o in Outcome]
# field -> (check, what it must be). Fields absent from older reports get defaults in `_defaults`.
_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (_is_str, "a non-empty string"),
    "repository": (_is_str, "HOST/PATH of the image"),
    "tags": (lambda v: _is_str_list(v) and bool(v) and all(TAG_RE.match(t) for t in v), "a list of tags"),
    "digest": (
        lambda v: v is None or (isinstance(v, str) and bool(DIGEST_RE.match(v))),
        "sha256:<hex> or null",
    ),
    "input_digest": (lambda v: isinstance(v, str) and bool(DIGEST_RE.match(v)), "sha256:<hex>"),
    "backend": (_is_str, "a backend name"),
    "platforms": (_is_str_list, "a list of OS/ARCH strings"),
    "duration_s": (lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v >= 0, "seconds"),
    "pin_tag": (_is_str, "one of the tags"),
    "outcome": (lambda v: v in _OUTCOMES, " or ".join(_OUTCOMES)),
    "image_id": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "log_path": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "push": (_is_bool, "true or false"),
    "size_bytes": (
        lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0),
        "bytes or null",
    ),
    **{key: (_is_text, "a string") for key in ("revision", "backend_reason", "smoke", "sbom")},
    **{key: (_is_text, "a string") for key in ("provenance", "signature", "error", "cache")},
    **{key: (_is_text, "a string") for key in ("base_image", "base_digest")},
    # Derived (`pushed`) or written by earlier versions only (`skipped`; `status` is not read).
    "pushed": (_is_bool, "true or false"),
    "skipped": (_is_bool, "true or false"),
}
_REQUIRED = ("name", "repository", "tags", "digest", "input_digest", "backend", "platforms")
_FIELDS = frozenset(f.name for f in fields(ImageRecord))


def _defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """What reports of earlier versions left out: derived the way they meant it."""
    tags = raw.get("tags")
    return {
        "duration_s": 0.0,
        "push": raw.get("pushed") is True,
        "pin_tag": tags[0] if isinstance(tags, list) and tags else "",
    }


def _field_problems(raw: dict[str, Any], where: str) -> list[str]:
    problems = [f"{where}.{key}: missing" for key in _REQUIRED if key not in raw]
    if "outcome" not in raw and "pushed" not in raw:
        problems.append(f"{where}.outcome: missing")
    for key, value in raw.items():
        check, what = _CHECKS.get(key, (lambda _: True, ""))
        if not check(value):
            problems.append(f"{where}.{key}: must be {what}, found {json.dumps(value)[:60]}")
    return problems


def _meaning_problem(raw: dict[str, Any], data: dict[str, Any], where: str) -> str:
    try:
        ImageRef.repository_of(data["repository"], f"{where}.repository")
    except ConfigError as exc:
        return exc.message
    if data["pin_tag"] not in data["tags"]:
        return f"{where}.pin_tag: must be one of the tags, found {data['pin_tag']!r}"
    if "pushed" in raw and raw["pushed"] is not data["outcome"].in_registry:
        return (
            f"{where}.pushed: says {json.dumps(raw['pushed'])}, but the outcome is {data['outcome'].value!r}"
        )
    return ""


def record_from_dict(raw: Any, where: str) -> tuple[ImageRecord | None, list[str]]:
    """(record, problems); `where` is `FILE: images[N]`, prefixed to every problem."""
    if not isinstance(raw, dict):
        return None, [f"{where}: must be an object with name, repository, tags, digest, ..."]
    problems = _field_problems(raw, where)
    if problems:
        return None, problems
    data = {**_defaults(raw), **{k: v for k, v in raw.items() if k in _FIELDS}}
    data["outcome"] = Outcome(raw["outcome"]) if "outcome" in raw else Outcome.of_old_report(raw)
    problem = _meaning_problem(raw, data, where)
    if problem:
        return None, [problem]
    try:
        return ImageRecord(**data), []
    except ValueError as exc:  # what the record itself refuses: a contradiction
        return None, [f"{where}.{exc}"]


def default_path(project_root: Path) -> Path:
    return project_root / "build" / "images.json"


def _fix(path: Path) -> str:
    return f"fix it or delete {path} and build again"


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); {_fix(path)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the build report ({exc}); {_fix(path)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply for a build report; {_fix(path)}") from None


def read(path: Path) -> list[ImageRecord]:
    """Every record; a missing file reads as none. Any problem: ConfigError, a line per problem."""
    if not path.is_file():
        return []
    data = _load(path)
    if (
        not isinstance(data, dict)
        or data.get("version") != VERSION
        or not isinstance(data.get("images"), list)
    ):
        raise ConfigError(
            f"{path}: not a version {VERSION} build report (needs version and images); {_fix(path)}"
        )
    records, problems = [], []
    for i, raw in enumerate(data["images"]):
        record, found = record_from_dict(raw, f"{path}: images[{i}]")
        problems += found
        if record:
            records.append(record)
    if problems:
        raise ConfigError("\n".join(f"{p}; {_fix(path)}" for p in problems))
    _refuse_duplicates(path, records)
    return records


def _refuse_duplicates(path: Path, records: list[ImageRecord]) -> None:
    """Two records of one image: which one was pushed is unknowable (set-images would pin the last)."""
    seen: set[str] = set()
    for record in records:
        if record.name in seen:
            raise ConfigError(f"{path}: two records of the image {record.name!r}; {_fix(path)}")
        seen.add(record.name)


def require(path: Path, names: Iterable[str] | None = None) -> list[ImageRecord]:
    """The records of `names` (all by default); a missing file says so."""
    if not path.is_file():
        raise ConfigError(f"{path} not found; run `invoke build` first (or pass --report FILE)")
    found = read(path)
    wanted = list(names) if names is not None else None
    return [r for r in found if wanted is None or r.name in wanted]


def update(path: Path, record: ImageRecord) -> None:
    """Insert or replace one image's record (by name) under a file lock. A build that produced
    nothing never replaces a good record: `invoke push` can still push the earlier build. A full
    disk: one line naming the report."""
    with room_to_write(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        _update_locked(path, record)


def _update_locked(path: Path, record: ImageRecord) -> None:
    with FileLock(str(path) + ".lock", timeout=60):
        current = read(path)
        if (
            record.outcome is Outcome.FAILED
            and not record.image_id
            and any(r.name == record.name and r.outcome is not Outcome.FAILED for r in current)
        ):
            return
        kept = [r for r in current if r.name != record.name]
        images = sorted([*kept, record], key=lambda r: r.name)
        write_atomic(path, dumps(images) + "\n")


@dataclass
class Recorder:
    """Writes each record the moment it is known; writes nothing in a dry run."""

    path: Path
    dry_run: bool
    written: list[ImageRecord] = field(default_factory=list)

    def __call__(self, record: ImageRecord) -> None:
        self.written.append(record)
        if not self.dry_run:
            update(self.path, record)
