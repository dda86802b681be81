"""Benchmark: a full `invoke build --push` (no layer cache) against a second one with nothing
changed (skip-unchanged), in one run on this machine; prints the ratio.

    python -m benchmarks.skip_unchanged      (root; buildah and docker-registry installed)
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from benchmarks.workspace import workspace


def timed(args: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "invoke", *args], cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL
    )
    return time.perf_counter() - start


def main() -> None:
    with workspace(MOLTBUILD_BACKEND="buildah") as ws:
        full = timed(["build", "--push", "--no-cache", "--rebuild"], ws.env, ws.clone)
        skipped = timed(["build", "--push"], ws.env, ws.clone)
        rebuilt = timed(["build", "--push", "--rebuild"], ws.env, ws.clone)
        print(f"full build+push (no cache):   {full:6.2f} s")
        print(f"rebuild with layer cache:     {rebuilt:6.2f} s  ({rebuilt / full:.0%} of full)")
        print(f"unchanged, skipped:           {skipped:6.2f} s  ({skipped / full:.0%} of full)")


if __name__ == "__main__":
    main()
