"""How the loop's events are shown: `--json` prints one JSON object per line (kind, image, seconds
since the change, the event's detail), the console a short line with the image's prefix."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from moltbuild.dev.target import Event


def as_json(event: Event) -> str:
    """One line: {"event": KIND, "image": NAME|null, "seconds": S|null, ...detail}."""
    seconds = None if event.seconds is None else round(event.seconds, 2)
    body = {"event": event.kind, "image": event.image, "seconds": seconds, **dict(event.detail)}
    return json.dumps(body, sort_keys=False, default=str)


def _detail(event: Event) -> str:
    d = event.detail
    if event.kind == "log":
        return str(d.get("line", ""))
    if event.kind == "url":
        return str(d.get("url", ""))
    if event.kind == "failed":
        lines = [str(ln) for ln in d.get("lines", ())]
        return str(d.get("reason", "")) + "".join(f"\n  | {ln}" for ln in lines)
    if event.kind == "change":
        files = [str(f) for f in d.get("files", ())]
        more = f" (+{len(files) - 3} more)" if len(files) > 3 else ""
        return ", ".join(files[:3]) + more
    if event.kind == "synced":
        return ", ".join(str(f) for f in d.get("files", ()))
    shown = {k: v for k, v in d.items() if k in ("ref", "reason", "note", "target")}
    return " ".join(f"{k}={v}" for k, v in shown.items())


def as_line(event: Event) -> str:
    """`[api] built in 2.1s ref=...`, `[frontend] | a log line`, `[dev] stopped`."""
    prefix = f"[{event.image or 'dev'}] "
    if event.kind == "log":
        return f"{prefix}| {_detail(event)}"
    when = f" in {event.seconds:.1f}s" if event.seconds is not None else ""
    detail = _detail(event)
    return f"{prefix}{event.kind}{when}" + (f": {detail}" if detail else "")


class Printer:
    """The loop's `emit`: thread-safe (targets emit from their log threads), through `write`
    (the console's stdout: masked)."""

    def __init__(self, write: Callable[[str], None], *, json_lines: bool) -> None:
        self.write, self.json_lines = write, json_lines
        self.lock = threading.Lock()
        self.seen: list[Event] = []

    def __call__(self, event: Event) -> None:
        with self.lock:
            self.seen.append(event) if event.kind != "log" else None
            self.write(as_json(event) if self.json_lines else as_line(event))
