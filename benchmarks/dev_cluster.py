"""`invoke dev --cluster` on the real single-node cluster: edit -> new answer of the stand-in api at
its forwarded URL, against the four commands a devpod engineer typed before (`invoke kaniko.build
--push --api-only`, `invoke k8s.set-images --only api`, `kubectl apply -k k8s`, `kubectl rollout
status`), timed until the rollout is done (a lower bound: no port is forwarded, nothing is asked).
Interleaved, each side in its own clone so neither sees the other's edits. Also the synced static
file: edit -> served. Goals: ratio <= 0.6; sync <= 2 s.

    python -m benchmarks.dev_cluster [ROUNDS]
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.dev_loop import _Edits, _wait_for
from benchmarks.workspace import ROOT
from tests.support.cluster import session
from tests.support.cluster.executor_run import cluster_env

NAMESPACE = "bench-dev"


@contextmanager
def _cluster_clones() -> Iterator[tuple[dict[str, str], Path, Path]]:
    with session.shared_cluster(may_start=True) as state, tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        env = {**cluster_env(state), "MOLTBUILD_ATTEST": "off", "MOLTBUILD_DEV_NAMESPACE": NAMESPACE}
        clones = []
        for name in ("loop", "by-hand"):
            clone = Path(tmp) / name
            subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
            clones.append(clone)
        yield env, clones[0], clones[1]


def _loop(env: dict[str, str], clone: Path) -> tuple[subprocess.Popen, dict[str, str], queue.Queue]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoke", "dev", "--cluster", "--json"],
        cwd=clone,
        env={**env, "MOLTBUILD_DEV_DEBOUNCE": "0.1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    events: queue.Queue[dict] = queue.Queue()
    threading.Thread(
        target=lambda: [events.put(json.loads(line)) for line in proc.stdout], daemon=True
    ).start()
    urls: dict[str, str] = {}
    deadline = time.monotonic() + 600
    while len(urls) < 2 and time.monotonic() < deadline:
        event = events.get(timeout=600)
        if event["event"] == "url":
            urls[event["image"]] = event["url"]
    return proc, urls, events


def _by_hand(env: dict[str, str], clone: Path) -> Callable[[], float]:
    edits = _Edits(clone)
    subprocess.run([sys.executable, "-m", "invoke", "kaniko.setup"], cwd=clone, env=env, check=True)
    steps = [
        [sys.executable, "-m", "invoke", "kaniko.build", "--push", "--api-only"],
        [sys.executable, "-m", "invoke", "k8s.set-images", "--only", "api"],
        ["kubectl", "apply", "-k", "k8s"],
        ["kubectl", "rollout", "status", "deployment/moltbook-api", "-n", "moltbook", "--timeout=300s"],
    ]

    def once() -> float:
        start = time.perf_counter()
        edits.next()
        for argv in steps:
            subprocess.run(argv, cwd=clone, env=env, check=True, capture_output=True)
        return time.perf_counter() - start

    return once


def measure(rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"invoke dev": [], "four commands": [], "sync": []}
    with _cluster_clones() as (env, loop_clone, hand_clone):
        proc, urls, _ = _loop(env, loop_clone)
        edits = _Edits(loop_clone)
        css = loop_clone / "moltbook-frontend" / "src" / "styles.css"
        style = css.read_text()
        hand = _by_hand(env, hand_clone)
        try:
            for i in range(rounds):
                order = ["invoke dev", "four commands"] if i % 2 == 0 else ["four commands", "invoke dev"]
                for side in order:
                    if side == "invoke dev":
                        start = time.perf_counter()
                        _wait_for(urls["api"] + "healthz", edits.next(), timeout=300)
                        times[side].append(time.perf_counter() - start)
                    else:
                        times[side].append(hand())
                start = time.perf_counter()
                css.write_text(f"{style}\n/* bench {i} */\n")
                _wait_for(urls["frontend"] + "styles.css", f"bench {i}", timeout=60)
                times["sync"].append(time.perf_counter() - start)
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=120)
            subprocess.run(
                ["kubectl", "delete", "-k", "k8s", "--wait=false"],
                cwd=hand_clone,
                env=env,
                capture_output=True,
            )
    return times


def main(rounds: int = 5) -> None:
    for side, values in measure(rounds).items():
        values = sorted(values)
        print(f"{side:14} median {values[len(values) // 2]:.2f} s  min {values[0]:.2f}  max {values[-1]:.2f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
