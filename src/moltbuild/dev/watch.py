"""What the loop watches and what a change means: the build contexts (watchfiles, inotify), each
changed path mapped to the images whose inputs it is (context and Dockerfile, .dockerignore read as
the builds read it: plan/inputs.rule_sets), and the sync rules a path matches. Changes that land
while the loop is busy wait in the queue and come out as one batch."""

from __future__ import annotations

import os
import queue
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moltbuild.plan.ignore import IgnoreRules
from moltbuild.plan.inputs import rule_sets
from moltbuild.project import ImageConfig


def glob_regex(glob: str) -> re.Pattern[str]:
    """A sync glob as a regexp over a POSIX path below the context: `*` and `?` stay within one
    directory, `**/` matches any number of them (none too)."""
    out, i = [], 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _fixed_prefix(glob: str) -> str:
    """The directories of a glob before its first wildcard: `src/` of `src/**/*.css`."""
    parts = glob.split("/")
    fixed = []
    for part in parts[:-1]:
        if any(c in part for c in "*?["):
            break
        fixed.append(part)
    return "".join(p + "/" for p in fixed)


@dataclass(frozen=True)
class WatchedImage:
    """One image's inputs as the watch sees them."""

    name: str
    context: Path
    dockerfile: Path
    rules: tuple[IgnoreRules, ...]
    sync: tuple[tuple[str, str], ...] = ()
    _compiled: tuple[tuple[re.Pattern[str], str, str], ...] = field(default=(), repr=False)

    @classmethod
    def of(cls, cfg: ImageConfig) -> WatchedImage:
        compiled = tuple((glob_regex(g), _fixed_prefix(g), dest) for g, dest in cfg.sync)
        rules = tuple(rule_sets(cfg.context))
        return cls(cfg.name, cfg.context, cfg.dockerfile, rules, cfg.sync, compiled)

    def rel(self, path: Path) -> str | None:
        """PATH below the context (POSIX), or None when outside it."""
        try:
            return path.relative_to(self.context).as_posix()
        except ValueError:
            return None

    def is_input(self, path: Path) -> bool:
        """Whether a change to PATH can change this image: its Dockerfile, or a file some builder
        sends (a file any rule set keeps; .dockerignore itself always counts)."""
        if path == self.dockerfile:
            return True
        rel = self.rel(path)
        if rel is None or rel in ("", "."):
            return False
        if rel == ".dockerignore":
            return True
        return any(not rules.excluded(rel) for rules in self.rules)

    def destination(self, path: Path) -> str | None:
        """Where a sync rule copies PATH in the container (None: no rule matches it). The part
        of the path below the glob's fixed directories is kept: `src/a/b.css` by `src/**/*.css`
        to `/www/` lands at `/www/a/b.css`."""
        rel = self.rel(path)
        if rel is None or path == self.dockerfile:
            return None
        for regex, prefix, dest in self._compiled:
            if regex.match(rel):
                return dest.rstrip("/") + "/" + rel[len(prefix) :]
        return None


def images_of(path: Path, images: Iterable[WatchedImage]) -> list[str]:
    """The images whose inputs PATH is."""
    return [image.name for image in images if image.is_input(path)]


def by_image(paths: Iterable[Path], images: Iterable[WatchedImage]) -> dict[str, list[Path]]:
    """A batch of changed paths grouped by the images they belong to (a path may feed several;
    one no image reads is dropped)."""
    images = list(images)
    grouped: dict[str, list[Path]] = {}
    for path in sorted(set(paths)):
        for name in images_of(path, images):
            grouped.setdefault(name, []).append(path)
    return grouped


def sync_plan(image: WatchedImage, paths: Iterable[Path]) -> list[tuple[Path, str]] | None:
    """(host path, container path) for each changed path when every one matches a sync rule of
    IMAGE and still exists (a deletion rebuilds); None: the batch needs a rebuild."""
    files = []
    for path in paths:
        dest = image.destination(path)
        if dest is None or not path.is_file():
            return None
        files.append((path, dest))
    return files or None


def classify(
    grouped: Mapping[str, list[Path]], images: Mapping[str, WatchedImage], running: Iterable[str]
) -> tuple[dict[str, list[tuple[Path, str]]], list[str]]:
    """Per image of a batch: the files to copy in (every path matches a sync rule and the image
    runs already), else a rebuild. Returns (sync: name -> files, rebuild: names)."""
    running = set(running)
    sync: dict[str, list[tuple[Path, str]]] = {}
    rebuild: list[str] = []
    for name, paths in grouped.items():
        files = sync_plan(images[name], paths) if name in running else None
        if files:
            sync[name] = files
        else:
            rebuild.append(name)
    return sync, rebuild


@dataclass
class Batches:
    """Changed paths collected by the watch thread; `next` waits for the first, then takes
    everything that arrived until the loop asks (changes during a build make the next batch)."""

    changes: queue.Queue[set[Path]] = field(default_factory=queue.Queue)

    def put(self, paths: Iterable[Path]) -> None:
        self.changes.put({Path(p) for p in paths})

    def next(self, timeout: float) -> set[Path]:
        """The paths changed since the last call (empty after TIMEOUT seconds without one)."""
        try:
            batch = set(self.changes.get(timeout=timeout))
        except queue.Empty:
            return set()
        while True:
            try:
                batch |= self.changes.get_nowait()
            except queue.Empty:
                return batch


def settled(changes: Iterable[tuple[Any, str]]) -> list[Path]:
    """The paths a watch batch changed, less the transient ones: created and gone again within it
    (the temp file of `sed -i` or an editor's atomic save), which no build would ever read."""
    kinds: dict[str, set[str]] = {}
    for change, path in changes:
        kinds.setdefault(path, set()).add(getattr(change, "name", str(change)))
    return [
        Path(path)
        for path, seen in kinds.items()
        if not ({"added", "deleted"} <= seen and not os.path.lexists(path))
    ]


class Watch:
    """watchfiles on the contexts in a thread, feeding `batches`; `stop` ends it."""

    def __init__(self, roots: Iterable[Path], batches: Batches, *, step_ms: int) -> None:
        self.roots = sorted({str(p) for p in roots})
        self.batches, self.step_ms = batches, step_ms
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dev-watch", daemon=True)

    def start(self) -> Watch:
        self._thread.start()
        return self

    def _run(self) -> None:
        import watchfiles  # only the loop needs it

        for changes in watchfiles.watch(
            *self.roots,
            stop_event=self._stop,
            step=self.step_ms,
            debounce=max(self.step_ms * 8, 1600),
            yield_on_timeout=False,
            raise_interrupt=False,
        ):
            self.batches.put(settled(changes))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
