"""Build secrets on a local builder: each value read from its source (the run context's
environment, or a file in the repository) only when the build starts, written to a 0600 file in a
private 0700 folder that goes when the build ends, and masked in every line the run prints. The
builder is told the file's path (`--secret id=ID,src=PATH`), never the value."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from moltbuild.errors import ConfigError
from moltbuild.system.processes import Runner

Secrets = Sequence[tuple[str, str]]  # (id, "env:VAR" | "file:PATH"), as ImagePlan.secrets


def problems(secrets: Secrets, environ: Mapping[str, str], root: Path) -> list[str]:
    """What keeps a secret's value from being read, one line each (no value is read here)."""
    found = []
    for key, source in secrets:
        kind, _, name = source.partition(":")
        if kind == "env" and not environ.get(name):
            found.append(f"secret {key}: the environment variable {name} is not set (or empty); export it")
        elif kind == "file" and not (root / name).is_file():
            found.append(f"secret {key}: {root / name} is not a file; create it (it stays out of the image)")
    return found


def _value(source: str, environ: Mapping[str, str], root: Path) -> bytes:
    kind, _, name = source.partition(":")
    if kind == "env":
        return environ.get(name, "").encode()
    return (root / name).read_bytes()


@contextlib.contextmanager
def secret_files(
    secrets: Secrets, runner: Runner, root: Path, parent: Path, *, dry_run: bool = False
) -> Iterator[dict[str, str]]:
    """id -> the 0600 file holding its value, for one build; removed afterwards (also on error).
    A dry run reads no value: it names the file a real run would write, and warns what is missing."""
    missing = problems(secrets, runner.environ, root)
    if missing and not dry_run:
        raise ConfigError(missing[0])
    if dry_run:
        for line in missing:
            runner.warn(f"{line}; a real run stops here")
        yield {key: f"{parent}/secrets-XXXX/{key}" for key, _ in secrets}
        return
    folder = Path(tempfile.mkdtemp(prefix="secrets-", dir=parent))  # mkdtemp: 0700
    try:
        paths, values = {}, []
        for key, source in secrets:
            data = _value(source, runner.environ, root)
            path = folder / key
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            text = data.decode("utf-8", "replace")
            values += [text.strip(), *(line.strip() for line in text.splitlines())]
            paths[key] = str(path)
        runner.console.add_secrets(values)
        yield paths
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def secret_argv(paths: Mapping[str, str]) -> list[str]:
    """`--secret id=ID,src=FILE` each: the same flag for buildah and BuildKit."""
    return [a for key, path in sorted(paths.items()) for a in ("--secret", f"id={key},src={path}")]
