"""Scale: a generated repository of N images (a base, N-1 services in 3 levels: a third FROM the
base, the rest FROM one of those) and files spread over their contexts (50,000 at 30 images,
the same per image at fewer), built with buildah into a registry on loopback. Timed, interleaved
where the state allows: `invoke changed`, an unchanged `invoke build --push`, one service changed,
the base changed, and `invoke verify` (4 tags per image: 120 refs at 30) against a `skopeo
inspect` loop over the same refs. Run by benchmarks.suite (one row per measure and size), or alone:

    python -m benchmarks.scale [ROUNDS] [IMAGES...]      (root; buildah, skopeo, docker-registry)
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.workspace import ROOT, Workspace, workspace
from moltbuild import report

FILES_AT_30 = 50_000
BUILD = ("build", "--push", "--no-smoke", "--jobs", "4")
GOALS = {"changed": 1.0, "unchanged build --push": 3.0}


def level_of(index: int, count: int) -> str:
    """The image each service is built FROM: the first third FROM the base, the rest FROM one
    of those (3 levels)."""
    first = max(1, (count - 1) // 3)
    return "base" if index <= first else f"svc{1 + (index - first - 1) % first:02d}"


def generate(root: Path, count: int, registry: str) -> None:
    """The repository, committed: Dockerfiles COPY one small file; every file counts as input."""
    per_image = -(-FILES_AT_30 // 30)
    names = ["base", *(f"svc{i:02d}" for i in range(1, count))]
    tables = []
    for index, name in enumerate(names):
        ctx = root / name
        for f in range(per_image):
            path = ctx / "src" / f"d{f // 100}" / f"f{f}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{name} {f}\n")
        (ctx / "marker.txt").write_text(f"{name} v0\n")
        parent = "busybox:1.36" if name == "base" else f"{registry}/{level_of(index, count)}:main"
        (ctx / "Dockerfile").write_text(f"FROM {parent}\nCOPY marker.txt /{name}.txt\n")
        tables.append(f'[tool.moltbuild.images.{name}]\nrepository = "{name}"\ncontext = "{name}"\n')
    (root / "pyproject.toml").write_text(f'[tool.moltbuild]\nregistry = "{registry}"\n' + "".join(tables))
    (root / ".gitignore").write_text("build/\n")
    shutil.copy(ROOT / "tasks.py", root / "tasks.py")
    git(root, "init", "-q", "-b", "main")
    commit(root, "generated")


def git(root: Path, *args: str) -> None:
    ident = ["-c", "user.name=b", "-c", "user.email=b@example.invalid"]
    subprocess.run(["git", "-C", str(root), *ident, *args], check=True, stdout=subprocess.DEVNULL)


def commit(root: Path, message: str) -> None:
    git(root, "add", "-A")
    git(root, "commit", "-qm", message)


def timed(argv: list[str], cwd: Path, env: dict[str, str], *, ok: bool = True) -> float:
    start = time.perf_counter()
    out = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if ok and out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {out.stdout[-2000:]}{out.stderr[-2000:]}")
    return time.perf_counter() - start


def invoke(repo: Path, env: dict[str, str], *args: str) -> float:
    return timed([sys.executable, "-m", "invoke", *args], repo, env)


def refs(repo: Path) -> list[str]:
    return [str(r.ref.with_tag(t)) for r in report.read(repo / "build" / "images.json") for t in r.tags]


def skopeo_loop(repo: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    for ref in refs(repo):
        timed(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"], repo, env)
    return time.perf_counter() - start


def touch(repo: Path, name: str, n: int) -> None:
    (repo / name / "marker.txt").write_text(f"{name} v{n}\n")
    commit(repo, f"{name}: v{n}")


def outcomes(repo: Path) -> dict[str, int]:
    found: dict[str, int] = {}
    for r in report.read(repo / "build" / "images.json"):
        found[r.outcome.value] = found.get(r.outcome.value, 0) + 1
    return found


def measure(ws: Workspace, count: int, rounds: int) -> tuple[dict[str, list[float]], list[str]]:
    """Times per measure (seconds, one per round) at `count` images, and notes."""
    repo = ws.base / f"scale{count}"
    registry = ws.env["MOLTBUILD_REGISTRY"].rsplit("/", 1)[0] + f"/scale{count}"
    env = {**ws.env, "MOLTBUILD_REGISTRY": registry, "PYTHONPATH": str(ROOT / "src")}
    generate(repo, count, registry)
    first = invoke(repo, env, *BUILD)
    notes = [f"{count} images, {sum(1 for _ in repo.rglob('*.txt'))} files; first build {first:.0f} s"]
    times: dict[str, list[float]] = {"changed": [], "unchanged build --push": [], "verify": [], "skopeo": []}
    sides: dict[str, Callable[[], float]] = {
        "changed": lambda: invoke(repo, env, "changed"),
        "unchanged build --push": lambda: invoke(repo, env, *BUILD),
        "verify": lambda: invoke(repo, env, "verify"),
        "skopeo": lambda: skopeo_loop(repo, env),
    }
    names = list(sides)
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            times[name].append(sides[name]())
    notes.append(f"verify / skopeo loop over {len(refs(repo))} refs")
    times["one service changed"], times["base changed"] = [], []
    leaf = f"svc{count - 1:02d}"
    for i in range(rounds):
        touch(repo, leaf, i + 1)
        times["one service changed"].append(invoke(repo, env, *BUILD))
        notes.append(f"one service changed, round {i + 1}: {outcomes(repo)}") if i == 0 else None
        touch(repo, "base", i + 1)
        times["base changed"].append(invoke(repo, env, *BUILD))
        notes.append(f"base changed, round {i + 1}: {outcomes(repo)}") if i == 0 else None
    return times, notes


def summary(times: dict[str, list[float]]) -> dict[str, str]:
    return {
        name: f"median {statistics.median(v):.2f} s ({min(v):.2f}-{max(v):.2f})" for name, v in times.items()
    }


def run(rounds: int = 3, sizes: tuple[int, ...] = (5, 30)) -> dict[int, dict[str, list[float]]]:
    """Each size in its own namespace of one registry; prints the figures and the ratios."""
    results: dict[int, dict[str, list[float]]] = {}
    with workspace("scale", MOLTBUILD_BACKEND="buildah") as ws:
        for count in sizes:
            times, notes = measure(ws, count, rounds)
            results[count] = times
            print(f"-- {count} images")
            for line in notes:
                print(f"   {line}")
            for name, text in summary(times).items():
                print(f"   {name:24} {text}")
            ratio = [v / s for v, s in zip(times["verify"], times["skopeo"], strict=True)]
            print(f"   verify / skopeo loop     median {statistics.median(ratio):.2f} (goal <= 0.30)")
    if len(sizes) > 1:
        small, large = min(sizes), max(sizes)
        for name in results[large]:
            growth = statistics.median(results[large][name]) / statistics.median(results[small][name])
            print(f"{name:24} {large} / {small} images: {growth:.2f}x (goal <= 4)")
    return results


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    run(args[0] if args else 3, tuple(args[1:]) or (5, 30))


def rows(rounds: int) -> list:
    """benchmarks.suite's rows: each measure at 30 / at 5 images, and verify / the skopeo loop."""
    from benchmarks.suite import row

    results = run(rounds)
    small, large = results[5], results[30]
    out = []
    for name in ("changed", "unchanged build --push", "one service changed", "base changed", "verify"):
        r = row(f"scale: {name}, 30 / 5 images", "30 images", "5 images", "<= 4", large[name], small[name])
        r.notes.append(f"30 images: {summary(large)[name]}; 5 images: {summary(small)[name]}")
        if name in GOALS:
            r.notes.append(f"goal at 30 images: <= {GOALS[name]:.0f} s")
        out.append(r)
    out.append(
        row(
            "scale: verify 120 refs / skopeo inspect loop (30 images)",
            "verify",
            "skopeo loop",
            "<= 0.3",
            large["verify"],
            large["skopeo"],
        )
    )
    return out
