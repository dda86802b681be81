"""The GitHub build job (.github/workflows/build-images.yml, job `build`) under act on this host, with
the Go-tools cache warm: the stand-in for actions/cache/restore copies a folder holding the locked
syft, cosign and kustomize (laid out as `invoke setup` saves them: NAME/VERSION/NAME) into its
`path:`, so `invoke setup` verifies their sha256 against the lock and uses them. Each round pushes
a one-line api change (one image built, the other reused), in a fresh HOME (an empty tool folder,
act's own state); the first run, which builds both images, is the warm-up. Per step: act's own
durations; the wall time of the job; any "waiting for TOOL" inside the build; when the background
preparation ended (its log's mtime). A cold row (the no-cache stand-in: the tools built from source
with an empty Go cache) follows if asked, stopped after COLD_LIMIT.

    python -m benchmarks.act_job [ROUNDS [COLD]]     (root; act, buildah, docker-registry, go)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.workspace import ROOT, Workspace, workspace
from moltbuild.system import gotools, toollock
from tests.integration.conftest import clean_env
from tests.integration.test_workflow_act import (
    act_argv,
    cache_stand_in,
    change,
    git,
    no_actions_cache,
    push_event,
)

LOGS = ROOT / "build" / "bench-act"  # each run's act output, timestamped, kept for reading
COLD_LIMIT = 600.0  # seconds: the cold row is skipped beyond this
TOOL_STEPS = ("Install moltbuild", "Go tools from the cache", "System tools")  # name prefixes
STEP_END = re.compile(r"(?:Success|Failure) - Main (.+?) \[([0-9.]+[a-zµ]+(?:[0-9.]+[a-zµ]+)*)\]$")
UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9}


def go_duration(text: str) -> float:
    """Seconds of a Go time.Duration as act prints it ("1m2.5s", "5.03ms")."""
    return sum(float(n) * UNITS[u] for n, u in re.findall(r"([0-9.]+)([a-zµ]+)", text))


class ActFailed(Exception):
    pass


@dataclass
class Job:
    wall: float
    steps: dict[str, float]  # step name -> seconds, act's figure
    # ("waiting for TOOL", seconds to the next line, the step it was in)
    waits: list[tuple[str, float, str]] = field(default_factory=list)
    background: str = ""  # the background preparation's last line
    background_s: float | None = None  # from the setup step's start to the end of that log
    log: list[str] = field(default_factory=list)  # act's output, each line with its second

    def tools(self) -> float:
        """The tool steps, and any wait for a tool later in the job."""
        return sum(s for name, s in self.steps.items() if name.startswith(TOOL_STEPS)) + self.waited()

    def waited(self) -> float:
        return sum(gap for _, gap, _ in self.waits)

    def image_work(self) -> float:
        """The build step without its waits for a tool."""
        waits = sum(gap for _, gap, where in self.waits if where.startswith("Build what"))
        return sum(s for name, s in self.steps.items() if name.startswith("Build what")) - waits


def prepared_cache(folder: Path) -> Path:
    """The locked binaries on PATH copied as NAME/VERSION/NAME, each checked against the lock."""
    lock = toollock.load()
    for tool in lock.tools.values():
        found = shutil.which(tool.name)
        want = tool.sha256.get(toollock.platform())
        if not found or toollock.sha256_file(Path(found)) != want:
            sys.exit(f"{tool.name} on PATH is not the lock's build: run `invoke setup --wait` first")
        target = folder / tool.name / tool.version / tool.name
        target.parent.mkdir(parents=True)
        shutil.copy2(found, target)
    return folder


def warm_stand_in(repo: Path, base: Path, prepared: Path) -> list[str]:
    """actions/cache/restore as a cache hit: the prepared folder copied into `path:` (~ expanded)."""
    script = (
        'case "$DEST" in "~/"*) DEST="$HOME/${DEST#"~/"}";; esac\n'
        'mkdir -p "$DEST" && cp -a "$FROM/." "$DEST/"\n'
        'echo "act - warm tool cache restored into $DEST"'
    )
    env = {"DEST": "${{ inputs.path }}", "FROM": str(prepared)}
    step = json.dumps({"name": "restore", "shell": "bash", "env": env, "run": script})
    return cache_stand_in(repo, base / "warm-actions-cache", step)


def run_job(
    ws: Workspace, home: Path, cache_args: list[str], limit: float | None = None, **extra: str
) -> Job | None:
    """One push of HEAD under act (job `build` only), `extra` in act's environment; None when it
    ran past `limit`."""
    home.mkdir(parents=True)
    event_file = home.parent / f"{home.name}-push.json"
    event_file.write_text(
        json.dumps(push_event(git(ws.clone, "rev-parse", "HEAD~1"), git(ws.clone, "rev-parse", "HEAD")))
    )
    keys = (
        "MOLTBUILD_REGISTRY",
        "MOLTBUILD_INSECURE_REGISTRIES",
        "MOLTBUILD_BASE_MIRROR",
        "MOLTBUILD_STORAGE_ROOT",
    )
    # a runner's tool folder (not root's /usr/local/bin, where this host keeps the locked tools)
    settings = {**{k: ws.env[k] for k in keys}, "MOLTBUILD_TOOL_DIR": str(home / ".local" / "bin")}
    env = clean_env(HOME=str(home), PIP_CACHE_DIR=str(Path.home() / ".cache" / "pip"), **extra)
    argv = [*act_argv("push", event_file, settings, cache_args), "-j", "build"]
    start = time.monotonic()
    proc = subprocess.Popen(
        argv, cwd=ws.clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(
        target=lambda: lines.extend((time.monotonic() - start, ln.rstrip("\n")) for ln in proc.stdout)
    )
    reader.start()
    reader.join(limit)
    if reader.is_alive():
        stop(proc, lines)
        return None
    rc, wall = proc.wait(), time.monotonic() - start
    if rc:
        stop_background(lines)  # a failed job leaves the Go builds running
        (LOGS / f"{home.name}-failed.log").write_text("\n".join(f"{at:7.1f} {ln}" for at, ln in lines) + "\n")
        raise ActFailed("act failed:\n" + "\n".join(line for _, line in lines[-60:]))
    return summarize(lines, wall, gotools.state_dir({"HOME": str(home)}) / "prepare.log", start)


def summarize(lines: list[tuple[float, str]], wall: float, log: Path, start: float) -> Job:
    job = Job(wall, {}, log=[f"{at:7.1f} {line}" for at, line in lines])
    setup_at, current = None, ""
    for i, (at, line) in enumerate(lines):
        if (m := STEP_END.search(line)) and m.group(1) != "restore":
            job.steps[m.group(1)] = go_duration(m.group(2))
        if "⭐ Run Main " in line:
            current = line.split("⭐ Run Main ", 1)[1]
        if "Run Main System tools" in line:
            setup_at = at
        if "waiting for " in line:
            gap = (lines[i + 1][0] if i + 1 < len(lines) else wall) - at
            job.waits.append((line.split("| ", 1)[-1].split(":", 1)[0], gap, current))
    if log.is_file():
        job.background = (log.read_text().strip().splitlines() or [""])[-1]
        if setup_at is not None:  # the log's mtime on the monotonic clock of `lines`
            job.background_s = log.stat().st_mtime - (time.time() - (time.monotonic() - start)) - setup_at
    return job


def stop_background(lines: list[tuple[float, str]]) -> None:
    """The background `invoke setup` act's job started (pid from setup's own line) stopped."""
    for _, line in list(lines):
        if m := re.search(r"in the background \(pid (\d+)", line):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(m.group(1)), signal.SIGTERM)


def stop(proc: subprocess.Popen, lines: list[tuple[float, str]]) -> None:
    """act and the background `invoke setup` it started stopped."""
    stop_background(lines)
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} {min(values):6.1f} {max(values):6.1f}"


def render(warm: list[Job], first: Job | None, cold: Job | None, cold_note: str) -> str:
    if not warm or first is None:
        return render_cold(cold, cold_note)
    head = (
        f"{'GitHub build job under act, warm tool cache (s)':66} {'median':>7} {'min':>6} {'max':>6}  target"
    )
    rows = [
        ("tool time: install + restore + invoke setup + waits", Job.tools, "<= 60"),
        ("  Install moltbuild (venv, pip install -e .)", lambda j: step(j, "Install moltbuild"), ""),
        ("  Go tools from the cache (the restore stand-in)", lambda j: step(j, "Go tools"), ""),
        (
            "  System tools (invoke setup: apt check, tools in the background)",
            lambda j: step(j, "System"),
            "",
        ),
        ("  waits for a tool later in the job ('waiting for TOOL')", Job.waited, ""),
        ("  (background setup done, after the setup step began)", lambda j: j.background_s or 0.0, ""),
        ("image work: Build what the registry lacks (one api change)", Job.image_work, ""),
        ("job wall time (act start to exit)", lambda j: j.wall, ""),
    ]
    lines = [head] + [f"{name:66} {spread([of(j) for j in warm])}  {target}" for name, of, target in rows]
    lines += sorted({f"    background: {j.background}" for j in warm})
    lines.append(f"    warm-up (both images built): tools {first.tools():.1f} s, job {first.wall:.1f} s")
    last = ", ".join(f"{n[:24]} {s:.1f}" for n, s in warm[-1].steps.items())
    lines.append(f"    steps of the last round: {last}")
    return "\n".join([*lines, render_cold(cold, cold_note)])


def render_cold(cold: Job | None, cold_note: str) -> str:
    if cold is None:
        return f"cold (no cache): {cold_note}"
    lines = []
    lines.append(
        f"cold (no cache, tools built from source): tools {cold.tools():.1f} s (waits {cold.waited():.1f}),"
        f" image work {cold.image_work():.1f} s, job {cold.wall:.1f} s"
    )
    lines += [f"    waiting for {tool[len('waiting for ') :]}: {gap:.1f} s" for tool, gap, _ in cold.waits]
    lines.append(f"    background: {cold.background}, {cold.background_s or 0:.0f} s after setup began")
    return "\n".join(lines)


def step(job: Job, prefix: str) -> float:
    return sum(s for name, s in job.steps.items() if name.startswith(prefix))


def cold_row(ws: Workspace) -> tuple[Job | None, str]:
    """The no-cache stand-in: the tools built from source, an empty Go build cache; the modules from
    this host's module cache (a hosted runner downloads them: not counted here)."""
    modules = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True)
    try:
        job = run_job(
            ws,
            ws.base / "home-cold",
            no_actions_cache(ws.clone, ws.base),
            COLD_LIMIT,
            GOMODCACHE=modules.stdout.strip(),
        )
    except ActFailed as exc:
        return None, f"failed: {str(exc)[-2000:]}"
    return job, f"skipped: still running after {COLD_LIMIT:.0f} s (stopped)"


def main(rounds: int = 3, cold: int = 1) -> None:
    load = os.getloadavg()
    LOGS.mkdir(parents=True, exist_ok=True)
    with workspace("benchact") as ws:
        prepared = prepared_cache(ws.base / "prepared-tool-cache")
        warm_args = warm_stand_in(ws.clone, ws.base, prepared)
        first = run_job(ws, ws.base / "home-warmup", warm_args) if rounds else None
        warm = []
        for n in range(rounds):
            change(ws.clone, "api/moltbook_api/app.py", f"bench act round {n}")
            warm.append(run_job(ws, ws.base / f"home-{n}", warm_args))
        cold_job, note = None, "not asked (COLD=0)"
        if cold:
            change(ws.clone, "api/moltbook_api/app.py", "bench act cold")
            cold_job, note = cold_row(ws)
        LOGS.mkdir(parents=True, exist_ok=True)
        for name, job in [
            ("warmup", first),
            *((f"warm-{n}", j) for n, j in enumerate(warm)),
            ("cold", cold_job),
        ]:
            if job:
                (LOGS / f"{name}.log").write_text("\n".join(job.log) + "\n")
        print(render(warm, first, cold_job, note))
        print(
            f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; after: {os.getloadavg()[0]:.2f}"
        )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
