"""`invoke dev --local`: edit -> new response of the stand-in api, against the same by hand
(`invoke build --api-only --no-smoke`, `podman rm -f`, `podman run -d -p`, poll), interleaved.
Goal: the loop's side <= 4 s on this machine.

    python -m benchmarks.dev_loop [ROUNDS]
"""

from __future__ import annotations

import json
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests

from benchmarks.workspace import Workspace, workspace
from moltbuild import report
from moltbuild.backends.buildah import storage_flags

MARK = '{"status": "ok"}'


def _wait_for(url: str, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if text in requests.get(url, timeout=2).text:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} never answered {text!r}")


class _Edits:
    """Each edit writes a new marker into the api's /healthz answer."""

    def __init__(self, clone: Path) -> None:
        self.app = clone / "api" / "moltbook_api" / "app.py"
        self.good = self.app.read_text()
        self.n = 0

    def next(self) -> str:
        self.n += 1
        marker = f"bench{self.n}"
        self.app.write_text(self.good.replace(MARK, f'{{"status": "ok", "m": "{marker}"}}'))
        return marker

    def restore(self) -> None:
        self.app.write_text(self.good)


def _loop(ws: Workspace, edits: _Edits) -> tuple[Callable[[], float], Callable[[], None]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoke", "dev", "--local", "--json", "--api-only"],
        cwd=ws.clone,
        env=ws.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    urls: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in proc.stdout:
            event = json.loads(line)
            if event["event"] == "url":
                urls.put(event["url"])

    threading.Thread(target=read, daemon=True).start()
    url = urls.get(timeout=300) + "healthz"

    def once() -> float:
        start = time.perf_counter()
        _wait_for(url, edits.next())
        return time.perf_counter() - start

    def stop() -> None:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)

    return once, stop


def _by_hand(ws: Workspace, clone: Path, edits: _Edits) -> Callable[[], float]:
    podman = ["podman", *storage_flags(Path(ws.env["MOLTBUILD_STORAGE_ROOT"]))]
    port = 18765
    name = "bench-dev-by-hand"

    def once() -> float:
        start = time.perf_counter()
        marker = edits.next()
        build = [sys.executable, "-m", "invoke", "build", "--api-only", "--no-smoke"]
        subprocess.run(build, cwd=clone, env=ws.env, check=True, capture_output=True)
        (rec,) = [r for r in report.read(clone / "build" / "images.json") if r.name == "api"]
        subprocess.run([*podman, "rm", "-f", name], capture_output=True)
        # as the smoke check runs it here: runc (crun refuses hybrid cgroups), podman's ulimits
        oci = ["--runtime", "runc"] if shutil.which("runc") else []
        limits = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
        run = [
            *podman,
            *oci,
            "run",
            "-d",
            *limits,
            "--name",
            name,
            "-p",
            f"127.0.0.1:{port}:8000",
            rec.image_id,
        ]
        subprocess.run(run, check=True, capture_output=True)
        _wait_for(f"http://127.0.0.1:{port}/healthz", marker)
        return time.perf_counter() - start

    return once


def measure(ws: Workspace, rounds: int) -> dict[str, list[float]]:
    """Seconds from the edit to the new answer, per side, interleaved (the loop keeps running)."""
    edits = _Edits(ws.clone)
    loop, stop = _loop(ws, edits)
    # by hand in a second clone: the loop does not see (and rebuild for) those edits
    clone = ws.base / "by-hand"
    subprocess.run(["git", "clone", "-q", str(ws.clone), str(clone)], check=True)
    hand = _by_hand(ws, clone, _Edits(clone))
    times: dict[str, list[float]] = {"invoke dev": [], "by hand": []}
    try:
        for i in range(rounds):
            order = ["invoke dev", "by hand"] if i % 2 == 0 else ["by hand", "invoke dev"]
            for side in order:
                time.sleep(1.0)  # the previous side's container settles
                times[side].append(loop() if side == "invoke dev" else hand())
    finally:
        stop()
        podman = ["podman", *storage_flags(Path(ws.env["MOLTBUILD_STORAGE_ROOT"]))]
        subprocess.run([*podman, "rm", "-f", "bench-dev-by-hand"], capture_output=True)
        edits.restore()
    return times


def main(rounds: int = 5) -> None:
    with workspace("benchdev", MOLTBUILD_BACKEND="buildah") as ws:
        t = measure(ws, rounds)
    for side, values in t.items():
        values = sorted(values)
        print(f"{side:12} median {values[len(values) // 2]:.2f} s  min {values[0]:.2f}  max {values[-1]:.2f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
