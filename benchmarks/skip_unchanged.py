"""Benchmark: a full `invoke build --push` (no layer cache) against a second one with nothing
changed (skip-unchanged), in one run on this machine; prints the ratio.

    python -m benchmarks.skip_unchanged      (root; buildah and docker-registry installed)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from moltbuild.localregistry import LocalRegistry
from tests.support import offline_bases

ROOT = Path(__file__).resolve().parents[1]


def timed(args: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "invoke", *args], cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL
    )
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, LocalRegistry(Path(tmp) / "reg") as reg:
        offline_bases.build_and_push(f"{reg.host}/mirror", storage_root=Path(tmp) / "bases")
        env = {
            **os.environ,
            "MOLTBUILD_REGISTRY": f"{reg.host}/bench",
            "MOLTBUILD_INSECURE_REGISTRIES": reg.host,
            "MOLTBUILD_BASE_MIRROR": f"{reg.host}/mirror",
            "MOLTBUILD_STORAGE_ROOT": str(Path(tmp) / "storage"),
            "MOLTBUILD_BACKEND": "buildah",
        }
        # A clone of HEAD: the benchmark never touches this checkout's build/images.json.
        work = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(work)], check=True)
        full = timed(["build", "--push", "--no-cache", "--rebuild"], env, work)
        skipped = timed(["build", "--push"], env, work)
        rebuilt = timed(["build", "--push", "--rebuild"], env, work)
        print(f"full build+push (no cache):   {full:6.2f} s")
        print(f"rebuild with layer cache:     {rebuilt:6.2f} s  ({rebuilt / full:.0%} of full)")
        print(f"unchanged, skipped:           {skipped:6.2f} s  ({skipped / full:.0%} of full)")
        subprocess.run(
            [
                "buildah",
                "--root",
                env["MOLTBUILD_STORAGE_ROOT"],
                "--runroot",
                env["MOLTBUILD_STORAGE_ROOT"] + "-run",
                "rmi",
                "--all",
                "--force",
            ],
            capture_output=True,
        )


if __name__ == "__main__":
    main()
