"""The registry layer cache on a new runner: an app whose image installs 33 real packages from
PyPI (pip, in the build container, byte-compiling them: pip's default compile step), rebuilt after
a one-line source change in an EMPTY storage, with the layer cache in the registry (REPO/cache) /
without it (MOLTBUILD_REGISTRY_CACHE=0). `used=True`: the build that fills the cache runs in a
storage that built the app before (its dependency step a local hit), as a developer's would.

    python -m benchmarks.registry_cache [ROUNDS]     (root; buildah, docker-registry; PyPI reachable)

The stand-in python base has no pip (tests/support/offline_bases.py), so the build context carries
pip's own wheel, run as `python3 pip.whl/pip`, the way pip documents bootstrapping from a wheel.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.workspace import ROOT, Workspace, workspace
from tests.integration.conftest import release_storage

PIP = "pip==26.3"
REQUIREMENTS = """\
alembic==1.20.1
annotated-types==0.8.0
attrs==26.1.0
blinker==1.9.0
certifi==2026.10.19.post1
charset-normalizer==3.5.3
click==8.5.1
flask==3.1.3
gunicorn==27.0.1
idna==3.20
itsdangerous==2.2.0
jinja2==3.1.6
mako==1.4.3
markdown-it-py==4.3.0
markupsafe==3.0.4
mdurl==0.1.2
packaging==26.4
pydantic==2.14.4
pydantic-core==2.50.5
pygments==2.21.0
python-dateutil==4.0.0
pytz==2026.6
pyyaml==6.0.4
requests==2.34.2
rich==15.0.0
sqlalchemy==2.1.9
structlog==26.1.0
tenacity==9.2.1
typing-extensions==4.16.0
typing-inspection==0.4.5
tzdata==2026.6
urllib3==2.8.0
werkzeug==3.1.9
"""
DOCKERFILE = """\
FROM python:3.12-slim
WORKDIR /app
COPY pip.whl /opt/pip.whl
COPY requirements.txt /app/requirements.txt
RUN python3 /opt/pip.whl/pip install --no-cache-dir --disable-pip-version-check \\
    --target /app/deps -r /app/requirements.txt
COPY app.py /app/app.py
ENV PYTHONPATH=/app/deps
CMD ["python3", "/app/app.py"]
"""
PYPROJECT = """\
[tool.moltbuild]
registry = "ghcr.io/ardenone"

[tool.moltbuild.images.deps]
repository = "bench-deps-app"
context = "app/"
"""
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.org"]


def make_project(base: Path) -> Path:
    """A one-image project in a git repository of its own: the app, its requirements, pip's wheel."""
    project = base / "deps-project"
    app = project / "app"
    app.mkdir(parents=True)
    (project / "pyproject.toml").write_text(PYPROJECT)
    shutil.copy(ROOT / "tasks.py", project / "tasks.py")
    (project / ".gitignore").write_text("build/\n.env.local\n")
    (app / "Dockerfile").write_text(DOCKERFILE)
    (app / "requirements.txt").write_text(REQUIREMENTS)
    (app / "app.py").write_text("import flask, requests, sqlalchemy, pydantic\nprint('change 0')\n")
    wheels = base / "pip-wheel"
    pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels), PIP]
    subprocess.run(pip, check=True)
    (wheel,) = wheels.glob("pip-*.whl")
    shutil.copy(wheel, app / "pip.whl")
    subprocess.run([*GIT, "init", "-q", "-b", "main", str(project)], check=True)
    commit(project, "bench app")
    return project


def commit(project: Path, message: str) -> None:
    subprocess.run([*GIT, "-C", str(project), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(project), "commit", "-qm", message], check=True)


class Rebuilds:
    """Each call: a one-line change, committed, then `invoke build --push` in a new empty storage."""

    def __init__(self, ws: Workspace, project: Path):
        self.ws = ws
        self.project = project
        self.count = 0
        self.env = {**ws.env, "PYTHONPATH": str(ROOT / "src")}
        self.cache_lines: list[str] = []

    def change(self) -> None:
        self.count += 1
        app = self.project / "app" / "app.py"
        app.write_text(app.read_text().rsplit("\n", 2)[0] + f"\nprint('change {self.count}')\n")
        commit(self.project, f"change {self.count}")

    def build(self, *, cache: bool) -> float:
        from benchmarks.suite import invoke

        self.change()
        storage = self.ws.base / f"runner-{self.count}" / "storage"
        env = {**self.env, "MOLTBUILD_STORAGE_ROOT": str(storage)}
        if not cache:
            env["MOLTBUILD_REGISTRY_CACHE"] = "0"
        try:
            return invoke(self.ws, "build", "--push", "--no-smoke", cwd=self.project, env=env)
        finally:
            if cache:
                self.cache_lines.append(self.report_cache())
            release_storage(storage)
            shutil.rmtree(storage.parent, ignore_errors=True)

    def report_cache(self) -> str:
        from moltbuild import report

        (record,) = report.read(self.project / "build" / "images.json")
        return record.cache


def fill_from_used_storage(builds: Rebuilds) -> None:
    """A developer's storage: the app built at an earlier commit without the cache, then the
    commit that fills REPO/cache built there (its dependency step a local hit)."""
    from benchmarks.suite import invoke

    storage = builds.ws.base / "used-storage"
    env = {**builds.env, "MOLTBUILD_STORAGE_ROOT": str(storage)}
    try:
        invoke(
            builds.ws,
            "build",
            "--push",
            "--no-smoke",
            cwd=builds.project,
            env={**env, "MOLTBUILD_REGISTRY_CACHE": "0"},
        )
        builds.change()
        invoke(builds.ws, "build", "--push", "--no-smoke", cwd=builds.project, env=env)
    finally:
        release_storage(storage)
        shutil.rmtree(storage, ignore_errors=True)


def measure(ws: Workspace, rounds: int, used: bool = False) -> tuple[dict[str, list[float]], list[str]]:
    """Interleaved times of both sides, and what the cached builds' reports say about the cache."""
    from benchmarks.suite import interleave

    builds = Rebuilds(ws, make_project(ws.base))
    if used:
        fill_from_used_storage(builds)
    else:
        builds.build(cache=True)  # the first build on the first runner fills REPO/cache
    builds.cache_lines.clear()
    times = interleave(
        rounds,
        {"cache": lambda: builds.build(cache=True), "no cache": lambda: builds.build(cache=False)},
    )
    return times, sorted(set(builds.cache_lines))


def main(rounds: int = 5, used: int = 0) -> None:
    from benchmarks.suite import registry_cache_row, render

    with workspace("benchcache", MOLTBUILD_BACKEND="buildah", MOLTBUILD_ATTEST="off") as ws:
        print(render([registry_cache_row(ws, rounds, used=bool(used))]))


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
