"""The cluster registry's contents: the pod sandbox, the Job helper, the executor (when one can be
had) and the offline base images under mirror/. Pushed once per machine; the registry's storage
is then kept in the cache and copied into each new cluster's registry before it starts, so a warm
start pushes nothing. Image references are stored without the registry address (its port changes).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.cluster import binaries, images

BASES_VERSION = "offline_bases-1"  # bump when tests/support/offline_bases.py changes what it builds


def layouts(log=print) -> dict[str, Path | None]:
    return {
        "pause": images.pause_image(),
        "helper": images.helper_image(),
        "executor": images.executor_layout(log=log),
    }


def seed_dir(found: dict[str, Path | None]) -> Path:
    parts = [BASES_VERSION]
    for name, layout in sorted(found.items()):
        parts.append(f"{name}={(layout / 'index.json').read_text() if layout else 'none'}")
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    return binaries.cache_root() / "registry-seed" / key


def restore(found: dict[str, Path | None], root: Path) -> dict[str, str] | None:
    """Copy the seed into the registry ROOT (before it starts); its refs, or None without a seed."""
    seed = seed_dir(found)
    if not (seed / "refs.json").exists():
        return None
    root.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(seed / "storage"), str(root)], check=True)
    return json.loads((seed / "refs.json").read_text())


def push_all(found: dict[str, Path | None], registry: str, root: Path) -> dict[str, str]:
    """Push everything into the running registry at REGISTRY, then keep its storage as the seed."""
    from tests.support import offline_bases

    refs = {
        "pause": images.push_pinned(found["pause"], f"{registry}/moltbuild-cluster/pause", images.PAUSE_TAG),
        "helper": images.push_pinned(found["helper"], f"{registry}/moltbuild-cluster/busybox", "1.36"),
    }
    if found["executor"]:
        refs["executor"] = images.push_executor(found["executor"], registry)
    with tempfile.TemporaryDirectory(prefix="cluster-bases-") as tmp:
        offline_bases.build_and_push(f"{registry}/mirror", storage_root=Path(tmp) / "storage")
    relative = {name: ref.removeprefix(f"{registry}/") for name, ref in refs.items()}
    seed = seed_dir(found)
    seed.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".seed-", dir=seed.parent) as tmp:
        subprocess.run(["cp", "-a", str(root), f"{tmp}/storage"], check=True)
        Path(tmp, "refs.json").write_text(json.dumps(relative, indent=1))
        shutil.rmtree(seed, ignore_errors=True)
        os.replace(tmp, seed)
        os.mkdir(tmp)
    return relative
