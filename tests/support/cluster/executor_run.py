"""Level (a) without a kubelet: the executor image run by podman exactly as the Job that
`invoke kaniko.build --dry-run` renders: its image, command, args, env and volumes (the workspace
holding what the init container would receive, the optional registry secret, the termination log
the digest is written to).

    python -m tests.support.cluster.executor_run [IMAGE ...]   (after `nox -s cluster`)
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from ruamel.yaml import YAML

from tests.support.cluster.cluster import REPO, STATE

PODMAN_LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]  # RECIPES: VM limits


def cluster_env(state: Path = STATE) -> dict[str, str]:
    env = dict(os.environ)
    for line in (state / "env").read_text().splitlines():
        key, value = line.removeprefix("export ").split("=", 1)
        env[key] = value
    return env


def rendered_jobs(project: Path, env: dict[str, str], names: list[str]) -> dict[str, dict]:
    """{image: Job} as `invoke kaniko.build --dry-run` prints (it always pushes) them."""
    only = ["--only", ",".join(names)] if names else []
    out = subprocess.run(
        [sys.executable, "-m", "invoke", "kaniko.build", "--dry-run", "--rebuild", *only],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stdout[-2000:] + out.stderr[-2000:])
    jobs = {}
    for name in names or ("api", "frontend"):
        lines = [ln[len(f"[{name}] ") :] for ln in out.stdout.splitlines() if ln.startswith(f"[{name}] ")]
        start = next(i for i, ln in enumerate(lines) if ln.startswith("+ create Job"))
        end = next(i for i, ln in enumerate(lines) if ln.startswith("+ exec"))
        (jobs[name],) = list(YAML(typ="safe").load_all("\n".join(lines[start + 1 : end])))
    return jobs


def workspace_of(project: Path, name: str, dest: Path) -> None:
    """What the init container receives (the same tarball the backend streams), unpacked."""
    from moltbuild.plan.inputs import context_tarball
    from moltbuild.project import load_images

    image = load_images(project)[name]
    tarball = context_tarball(image.context, image.dockerfile)
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        tar.extractall(dest, filter="data")


def podman_argv(
    job: dict, workspace: Path, termination: Path, docker_config: Path | None, state: Path = STATE
) -> list[str]:
    """`podman run` for the Job's executor container: same image, command, args, env, mounts."""
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    store = state / "podman"  # its own storage, removed by `down`; the machine's default is shared
    argv = ["podman", "--root", f"{store}/root", "--runroot", f"{store}/run", "--storage-driver", "vfs"]
    argv += ["run", "--rm", *PODMAN_LIMITS, "--tls-verify=false"]
    for mount in container.get("volumeMounts", []):
        source = volumes[mount["name"]]
        if "emptyDir" in source:
            argv += ["-v", f"{workspace}:{mount['mountPath']}"]
        elif "secret" in source and docker_config is not None:
            argv += ["-v", f"{docker_config}:{mount['mountPath']}:ro"]
        elif "secret" in source and not source["secret"].get("optional"):
            raise RuntimeError(f"the Job needs Secret {source['secret']['secretName']}")
    argv += ["-v", f"{termination}:{container.get('terminationMessagePath', '/dev/termination-log')}"]
    for var in container.get("env", []):
        argv += ["--env", f"{var['name']}={var['value']}"]
    argv += ["--entrypoint", container["command"][0], container["image"], *container["command"][1:]]
    return argv + container.get("args", [])


def run_executor(project: Path, name: str, job: dict, state: Path = STATE) -> str:
    """Run the Job's executor in podman; returns the digest it wrote to the termination log."""
    with tempfile.TemporaryDirectory(prefix=f"kaniko-{name}-") as tmp:
        workspace, termination = Path(tmp) / "workspace", Path(tmp) / "termination-log"
        workspace.mkdir()
        termination.touch()
        workspace_of(project, name, workspace)
        argv = podman_argv(job, workspace, termination, None, state)
        print("+", " ".join(argv), flush=True)
        subprocess.run(argv, check=True)
        return termination.read_text().strip()


def main(names: list[str], state: Path = STATE) -> int:
    """Run the rendered Jobs' executors in podman against the cluster at STATE (its registry)."""
    env = cluster_env(state)
    jobs = rendered_jobs(REPO, env, names)
    for name, job in jobs.items():
        digest = run_executor(REPO, name, job, state)
        container = job["spec"]["template"]["spec"]["containers"][0]
        dest = next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--destination="))
        served = subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}", f"docker://{dest}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        print(f"{name}: executor wrote {digest}; the registry serves {dest} as {served}")
        if served != digest:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
