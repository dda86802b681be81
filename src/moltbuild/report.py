"""build/images.json: the single record every later step reads. Atomic, locked, merged."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from filelock import FileLock

from .errors import ConfigError

VERSION = 1
FIELDS = (
    "name",
    "repository",
    "tags",
    "digest",
    "input_digest",
    "backend",
    "pushed",
    "platforms",
    "duration_s",
)


def default_path(project_root: Path) -> Path:
    return project_root / "build" / "images.json"


def read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"version": VERSION, "images": []}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); delete it and build again"
        ) from None
    if (
        not isinstance(data, dict)
        or data.get("version") != VERSION
        or not isinstance(data.get("images"), list)
    ):
        raise ConfigError(f"{path}: not a version {VERSION} build report; delete it and build again")
    return data


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def update_image(path: Path, entry: dict[str, Any], **run_info: Any) -> None:
    """Insert or replace one image's entry (by name) under a file lock."""
    missing = [f for f in FIELDS if f not in entry]
    if missing:
        raise ValueError(f"report entry lacks {missing}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=60):
        data = read(path)
        images = [e for e in data["images"] if e.get("name") != entry["name"]]
        images.append(entry)
        data["images"] = sorted(images, key=lambda e: e["name"])
        data.update(run_info)
        _write_atomic(path, data)


def entries(path: Path, names: list[str] | None = None) -> list[dict[str, Any]]:
    found = read(path)["images"]
    if names is not None:
        found = [e for e in found if e["name"] in names]
    return found
