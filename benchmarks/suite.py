"""Every benchmark row in one run: each a ratio of two sides timed interleaved (rotating order),
min/median/max over ROUNDS pairs, against raw tools the benchmark starts itself on a real registry
on loopback. Prints a table and writes build/bench.json. No timing is asserted anywhere.

    python -m benchmarks.suite [ROUNDS]     (root; buildah, skopeo, podman, docker-registry)
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks import dev_loop, registry_cache, scale
from benchmarks.attest_cost import ARGS, SMOKED, attest_times
from benchmarks.push_once import push_phase, rebuild_vs_raw
from benchmarks.workspace import ROOT, Workspace, workspace
from moltbuild import report


@dataclass
class Row:
    name: str
    mine: str
    theirs: str
    target: str
    ratios: list[float]
    mine_s: list[float]
    theirs_s: list[float]
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        med = statistics.median
        return {
            "ratio": {"min": min(self.ratios), "median": med(self.ratios), "max": max(self.ratios)},
            "median_s": {"mine": med(self.mine_s), "theirs": med(self.theirs_s)},
        }


def row(name: str, mine: str, theirs: str, target: str, a: list[float], b: list[float]) -> Row:
    return Row(name, mine, theirs, target, [x / y for x, y in zip(a, b, strict=True)], a, b)


def timed(argv: list[str], *, cwd: Path = ROOT, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def interleave(rounds: int, sides: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            times[name].append(sides[name]())
    return times


def invoke(ws: Workspace, *args: str, cwd: Path | None = None, env: dict | None = None) -> float:
    return timed([sys.executable, "-m", "invoke", *args], cwd=cwd or ws.clone, env=env or ws.env)


# -- the rows ------------------------------------------------------------------------------------


def unchanged_vs_full(ws: Workspace, rounds: int) -> Row:
    full = "build", "--push", "--rebuild", "--no-cache", "--no-smoke"
    t = interleave(
        rounds, {"full": lambda: invoke(ws, *full), "unchanged": lambda: invoke(ws, "build", "--push")}
    )
    return row(
        "unchanged build --push / full build",
        "unchanged",
        "full (--rebuild --no-cache)",
        "<= 0.05",
        t["unchanged"],
        t["full"],
    )


def rebuild_rows(ws: Workspace, rounds: int) -> list[Row]:
    t = rebuild_vs_raw(ws, rounds)
    raw_push, ours_push = push_phase(ws.env, ws.clone, ws.base, rounds)
    smoke = row("smoke check cost", "invoke+smoke", "invoke", "(information)", t["invoke+smoke"], t["invoke"])
    return [
        row(
            "build --push --rebuild / raw bud + push per tag (both parallel)",
            "invoke",
            "raw, parallel",
            "<= 1.00",
            t["invoke"],
            t["raw, parallel"],
        ),
        row(
            "build --push --rebuild / raw bud + push per tag (raw sequential)",
            "invoke",
            "raw, sequential",
            "<= 1.00",
            t["invoke"],
            t["raw, sequential"],
        ),
        row(
            "buildah push x4 / push once + 3 manifest PUTs",
            "push x4",
            "once + PUTs",
            "> 1",
            raw_push,
            ours_push,
        ),
        smoke,
    ]


def verify_rows(ws: Workspace, rounds: int) -> list[Row]:
    path = ws.clone / "build" / "images.json"
    insecure = ["--tls-verify=false"]

    def refs() -> list[str]:
        return [str(r.ref.with_tag(t)) for r in report.read(path) for t in r.tags]

    def skopeo_loop() -> float:
        start = time.perf_counter()
        for ref in refs():
            subprocess.run(
                ["skopeo", "inspect", "--raw", *insecure, f"docker://{ref}"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        return time.perf_counter() - start

    out = []
    for label, target in (("8 refs", "<= 1.0"), ("40 refs", "<= 0.3")):
        if label == "40 refs":  # 16 more tags per image, added in the registry (manifest PUTs)
            extra = [a for n in range(16) for a in ("--tag", f"extra-{n}")]
            invoke(ws, "tag", *extra)
        count = len(refs())
        t = interleave(rounds, {"verify": lambda: invoke(ws, "verify"), "skopeo": skopeo_loop})
        out.append(
            row(
                f"verify {count} refs / skopeo inspect loop",
                "verify",
                "skopeo loop",
                target,
                t["verify"],
                t["skopeo"],
            )
        )
    return out


def attest_row(ws: Workspace, rounds: int, *, smoke: bool = False) -> Row:
    t, notes = attest_times(ws, rounds, interleave, invoke, SMOKED if smoke else ARGS)
    command = "build --push --api-only" + ("" if smoke else " --no-smoke")
    r = row(
        f"{command}, one-line change: signed + SBOM + provenance / ATTEST=off",
        "attested",
        "MOLTBUILD_ATTEST=off",
        "<= 1.25",
        t["signed"],
        t["bare"],
    )
    r.notes += notes
    r.notes.append(_medians(t, "signed", "bare"))
    return r


def jobs_row(ws: Workspace, rounds: int) -> Row:
    args = "build", "--rebuild", "--no-cache", "--no-smoke"
    t = interleave(
        rounds,
        {"2": lambda: invoke(ws, *args, "--jobs", "2"), "1": lambda: invoke(ws, *args, "--jobs", "1")},
    )
    return row(
        "--jobs 2 / --jobs 1 (both images, --no-cache)", "--jobs 2", "--jobs 1", "<= 0.75", t["2"], t["1"]
    )


def list_row(rounds: int) -> Row:
    env = {**os.environ}
    t = interleave(
        rounds * 2,
        {
            "list": lambda: timed([sys.executable, "-m", "invoke", "--list"], env=env),
            "python": lambda: timed([sys.executable, "-c", "pass"], env=env),
        },
    )
    r = row(
        "invoke --list / bare python start",
        "invoke --list",
        "python -c pass",
        "wall <= 0.30 s",
        t["list"],
        t["python"],
    )
    r.notes.append(f"invoke --list wall: median {statistics.median(t['list']):.3f} s")
    return r


def hashing_row(base: Path, rounds: int) -> Row:
    ctx = base / "ctx50k"
    for d in range(500):
        (ctx / "src" / f"d{d}").mkdir(parents=True)
        for f in range(100):
            (ctx / "src" / f"d{d}" / f"f{f}.txt").write_text(f"file {d} {f}\n" * 3)
    (ctx / "node_modules" / "x").mkdir(parents=True)
    for f in range(5000):
        (ctx / "node_modules" / "x" / f"{f}.js").write_text("x")
    (ctx / ".dockerignore").write_text("node_modules\n")
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    ours = (
        "from pathlib import Path; from moltbuild.plan.inputs import input_digest; "
        f"input_digest(Path({str(ctx)!r}), Path({str(ctx / 'Dockerfile')!r}), {{}}, None, [])"
    )
    tar = f"tar c -C {ctx} --exclude=./node_modules . | sha256sum"
    t = interleave(
        rounds,
        {"ours": lambda: timed([sys.executable, "-c", ours]), "tar": lambda: timed(["sh", "-c", tar])},
    )
    return row(
        "context hashing, 50k small files / tar c | sha256sum",
        "input_digest",
        "tar | sha256sum",
        "<= 1.3",
        t["ours"],
        t["tar"],
    )


def aged_storage_row(ws: Workspace, rounds: int, builds: int) -> tuple[Row, dict[str, str]]:
    """Warm rebuild in a storage that saw `builds` --no-cache builds vs a fresh one (another clone,
    another storage); the two digests show reproducibility on the side."""
    aged_env = {**ws.env, "MOLTBUILD_STORAGE_ROOT": str(ws.base / "aged")}
    fresh_env = {**ws.env, "MOLTBUILD_STORAGE_ROOT": str(ws.base / "fresh")}
    fresh_clone = ws.base / "fresh-clone"
    subprocess.run(["git", "clone", "-q", str(ws.clone), str(fresh_clone)], check=True)
    api = "build", "--api-only", "--no-smoke", "--rebuild"
    for _ in range(builds):
        invoke(ws, *api, "--no-cache", env=aged_env)
    invoke(ws, *api, cwd=fresh_clone, env=fresh_env)
    t = interleave(
        rounds,
        {
            "aged": lambda: invoke(ws, *api, env=aged_env),
            "fresh": lambda: invoke(ws, *api, cwd=fresh_clone, env=fresh_env),
        },
    )
    r = row(
        f"warm rebuild after {builds} builds / fresh storage",
        "aged storage",
        "fresh storage",
        "<= 1.10",
        t["aged"],
        t["fresh"],
    )
    count = _image_count(ws.base / "aged")
    r.notes.append(f"aged storage holds {count} images after {builds + rounds} builds")
    ids = {}
    for name, cwd in (("aged", ws.clone), ("fresh", fresh_clone)):
        (rec,) = [x for x in report.read(cwd / "build" / "images.json") if x.name == "api"]
        ids[name] = rec.image_id or ""
    return r, ids


def registry_cache_row(ws: Workspace, rounds: int, used: bool = False) -> Row:
    """A new runner (empty storage) rebuilding an app with 33 PyPI packages after a one-line change:
    with the registry layer cache / without it; `used`: the cache filled from a used storage."""
    t, cache_lines = registry_cache.measure(ws, rounds, used=used)
    filled = "filled from a used storage" if used else "filled from an empty one"
    r = row(
        f"new runner, one-line change: registry cache / none (pip, 33 pkgs; {filled})",
        "REPO/cache",
        "MOLTBUILD_REGISTRY_CACHE=0",
        "<= 0.3",
        t["cache"],
        t["no cache"],
    )
    spread = {side: f"{min(v):.1f}-{max(v):.1f} s" for side, v in t.items()}
    r.notes.append(
        f"median {statistics.median(t['cache']):.1f} s ({spread['cache']}) with the cache, "
        f"{statistics.median(t['no cache']):.1f} s ({spread['no cache']}) without"
    )
    r.notes += [f"report: {line}" for line in cache_lines]
    return r


def _medians(t: dict[str, list[float]], *sides: str) -> str:
    """Each side's median and spread in seconds, for the notes."""
    med = statistics.median
    return "; ".join(
        f"{side} median {med(t[side]):.1f} s ({min(t[side]):.1f}-{max(t[side]):.1f})" for side in sides
    )


def _image_count(root: Path) -> int:
    from moltbuild.backends.buildah import storage_flags

    out = subprocess.run(
        ["podman", *storage_flags(root), "images", "--all", "--quiet"], capture_output=True, text=True
    ).stdout
    return len(out.split())


# -- the run -------------------------------------------------------------------------------------


def render(rows: list[Row]) -> str:
    lines = [f"{'measure':66} {'median':>7} {'min':>6} {'max':>6}  target"]
    for r in rows:
        s = r.summary()["ratio"]
        lines.append(f"{r.name:66} {s['median']:7.2f} {s['min']:6.2f} {s['max']:6.2f}  {r.target}")
        lines += [f"    {note}" for note in r.notes]
    return "\n".join(lines)


def main(rounds: int = 5, aged_builds: int = 40) -> None:
    started = time.time()
    rows: list[Row] = []
    extra: dict[str, object] = {}
    with workspace(MOLTBUILD_BACKEND="buildah") as ws:
        rows.append(unchanged_vs_full(ws, rounds))
        rows += rebuild_rows(ws, rounds)
        rows += verify_rows(ws, rounds)
        rows.append(jobs_row(ws, rounds))
        rows += [attest_row(ws, rounds), attest_row(ws, rounds, smoke=True)]
        aged, ids = aged_storage_row(ws, rounds, aged_builds)
        rows.append(aged)
        extra["reproducible_image_ids"] = ids
        extra["reproducible"] = len(set(ids.values())) == 1
    with workspace("benchcache", MOLTBUILD_BACKEND="buildah", MOLTBUILD_ATTEST="off") as ws:
        rows.append(registry_cache_row(ws, rounds))
    with workspace("benchdev", MOLTBUILD_BACKEND="buildah") as ws:
        rows.append(
            row(
                "invoke dev --local: edit -> new response / by hand",
                "invoke dev",
                "by hand",
                "mine <= 4 s",
                *dev_loop.measure(ws, rounds).values(),
            )
        )
    rows += scale.rows(rounds)
    with workspace("benchused", MOLTBUILD_BACKEND="buildah", MOLTBUILD_ATTEST="off") as ws:
        rows.append(registry_cache_row(ws, rounds, used=True))
    rows.append(list_row(rounds))
    with tempfile.TemporaryDirectory(prefix="bench-ctx-") as tmp:
        rows.append(hashing_row(Path(tmp), rounds))
    print(render(rows))
    print(f"same commit, two clones, two storages: image IDs {extra['reproducible_image_ids']}")
    out = ROOT / "build" / "bench.json"
    out.parent.mkdir(exist_ok=True)
    data = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
        },
        "buildah": shutil.which("buildah")
        and subprocess.run(["buildah", "--version"], capture_output=True, text=True).stdout.strip(),
        "rounds": rounds,
        "rows": [{**asdict(r), **r.summary()} for r in rows],
        **extra,
    }
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(out)
    print(f"wrote {out} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
