"""What every benchmark starts from: a registry on loopback holding the offline bases, a clone of
HEAD (this checkout's build/ is never touched), a private buildah storage, the settings for all
three; everything is removed at the end."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from moltbuild.backends.buildah import storage_flags
from moltbuild.registry.local import LocalRegistry
from moltbuild.system.processes import Runner
from tests.support import offline_bases

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Workspace:
    base: Path  # a temp dir for anything else the benchmark needs
    clone: Path
    env: dict[str, str]


@contextlib.contextmanager
def workspace(namespace: str = "bench", **settings: str) -> Iterator[Workspace]:
    with (
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
        LocalRegistry(Path(tmp) / "reg", Runner(environ=os.environ)) as reg,
    ):
        base = Path(tmp)
        offline_bases.build_and_push(f"{reg.host}/mirror", storage_root=base / "bases")
        storage = base / "storage"
        env = {
            **os.environ,
            "MOLTBUILD_REGISTRY": f"{reg.host}/{namespace}",
            "MOLTBUILD_INSECURE_REGISTRIES": reg.host,
            "MOLTBUILD_BASE_MIRROR": f"{reg.host}/mirror",
            "MOLTBUILD_STORAGE_ROOT": str(storage),
            "MOLTBUILD_ATTEST": "off",  # rows compare with raw tools; attestation has its own row
            **settings,
        }
        clone = base / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        try:
            yield Workspace(base, clone, env)
        finally:
            flags = storage_flags(storage)
            subprocess.run(["buildah", *flags, "rmi", "--all", "--force"], capture_output=True)
