"""Images the cluster needs, built once per machine into OCI layouts in the cache and copied into
the cluster's registry at each start: the pod sandbox (`pause`, compiled from Kubernetes' own
pause.c in the module cache) and a kaniko executor image laid out like the official one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.cluster import binaries

PAUSE_TAG = "3.10"
# The official executor image's environment (deploy/Dockerfile of the kaniko fork).
EXECUTOR_ENV = {
    "HOME": "/root",
    "USER": "root",
    "PATH": "/usr/local/bin:/kaniko",
    "SSL_CERT_DIR": "/kaniko/ssl/certs",
    "DOCKER_CONFIG": "/kaniko/.docker/",
    "DOCKER_CREDENTIAL_GCR_CONFIG": "/kaniko/.config/gcloud/docker_credential_gcr_config.json",
}


def run(argv: list[str], **kw) -> str:
    res = subprocess.run(argv, capture_output=True, text=True, **kw)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr[-2000:]}")
    return res.stdout.strip()


def layout_dir(name: str, tag: str) -> Path:
    return binaries.cache_root() / "images" / f"{name}-{tag}"


def _buildah(store: Path) -> list[str]:
    return [
        "buildah",
        "--root",
        str(store / "root"),
        "--runroot",
        str(store / "run"),
        "--storage-driver",
        "vfs",
    ]


def commit_rootfs(rootfs: Path, dest: Path, config: list[str]) -> Path:
    """A scratch image holding ROOTFS with buildah CONFIG flags, saved as an OCI layout at DEST."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}-", dir=dest.parent) as tmp:
        bah = _buildah(Path(tmp))
        ctr = run([*bah, "from", "scratch"])
        run([*bah, "copy", ctr, f"{rootfs}/", "/"])
        run([*bah, "config", *config, ctr])
        layout = Path(tmp) / "layout"
        run([*bah, "commit", "--timestamp", "0", ctr, f"oci:{layout}:latest"])
        run([*bah, "rm", ctr])
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(layout, dest)
        run(["chmod", "-R", "u+w", tmp])  # vfs layers can be read-only
    return dest


def pause_image() -> Path:
    """`pause` from k8s.io/kubernetes' build/pause/linux/pause.c, static, as an OCI layout."""
    dest = layout_dir("pause", PAUSE_TAG)
    if (dest / "index.json").exists():
        return dest
    src = Path(
        run(
            ["go", "list", "-m", "-f", "{{.Dir}}", f"k8s.io/kubernetes@{binaries.KUBERNETES}"],
            env=binaries.go_env({"GOFLAGS": "-mod=mod"}),
            cwd=tempfile.gettempdir(),
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = Path(tmp) / "rootfs"
        rootfs.mkdir()
        run(
            [
                "gcc",
                "-Os",
                "-static",
                f"-DVERSION=v{PAUSE_TAG}",
                "-o",
                str(rootfs / "pause"),
                str(src / "build/pause/linux/pause.c"),
            ]
        )
        run(["strip", str(rootfs / "pause")])
        return commit_rootfs(rootfs, dest, ["--entrypoint", '["/pause"]', "--user", "65535:65535"])


def executor_image(executor: Path, version: str) -> Path:
    """The executor image from an executor binary: /kaniko/executor, the CA bundle under
    /kaniko/ssl/certs, an empty DOCKER_CONFIG dir, the official environment and entrypoint."""
    dest = layout_dir("kaniko-executor", version)
    if (dest / "index.json").exists():
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "rootfs"
        (root / "kaniko/ssl/certs").mkdir(parents=True)
        (root / "kaniko/.docker").mkdir()
        (root / "workspace").mkdir()
        (root / "etc").mkdir()
        shutil.copy(executor, root / "kaniko/executor")
        shutil.copy("/etc/ssl/certs/ca-certificates.crt", root / "kaniko/ssl/certs/ca-certificates.crt")
        (root / "etc/nsswitch.conf").write_text("hosts: files dns\n")
        (root / "kaniko").chmod(0o777)
        config = ["--entrypoint", json.dumps(["/kaniko/executor"]), "--workingdir", "/workspace"]
        for key, value in EXECUTOR_ENV.items():
            config += ["--env", f"{key}={value}"]
        return commit_rootfs(root, dest, config)


def push(layout: Path, ref: str) -> str:
    """Copy an OCI layout into the (plain-HTTP) registry at REF; returns the pushed digest."""
    with tempfile.NamedTemporaryFile() as digest:
        run(
            [
                "skopeo",
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                "--digestfile",
                digest.name,
                f"oci:{layout}:latest",
                f"docker://{ref}",
            ]
        )
        return Path(digest.name).read_text().strip()


def executor_binary(log=print) -> tuple[Path, str] | None:
    """The executor binary and its image tag: built from the Go module at the pinned version, else
    MOLTBUILD_KANIKO_EXECUTOR_BIN (an executor built elsewhere), else None (logged why)."""
    try:
        return binaries.build_kaniko(log=log), binaries.KANIKO
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[-1]
    given = os.environ.get("MOLTBUILD_KANIKO_EXECUTOR_BIN")
    if given and Path(given).is_file():
        digest = run(["sha256sum", given]).split()[0]
        log(f"cluster: executor from MOLTBUILD_KANIKO_EXECUTOR_BIN ({reason})")
        return Path(given), f"local-{digest[:12]}"
    log(f"cluster: no kaniko executor image: {reason}")
    return None


def executor_layout(log=print) -> Path | None:
    found = executor_binary(log=log)
    return executor_image(*found) if found else None


def push_executor(layout: Path, registry: str) -> str:
    """Push the executor layout; returns the reference pinned by digest (what the Jobs run)."""
    repo = f"{registry}/moltbuild-cluster/kaniko-executor"
    digest = push(layout, f"{repo}:{layout.name.removeprefix('kaniko-executor-')}")
    return f"{repo}@{digest}"


def helper_image() -> Path:
    """The Job's init container (`sh`, `tar`): busybox from busybox-static, like the offline bases."""
    from tests.support.offline_bases import _busybox_rootfs

    dest = layout_dir("busybox", "1.36")
    if (dest / "index.json").exists():
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        _busybox_rootfs(Path(tmp) / "rootfs")
        return commit_rootfs(Path(tmp) / "rootfs", dest, ["--cmd", "/bin/sh", "--env", "PATH=/usr/bin:/bin"])


def push_pinned(layout: Path, repo: str, tag: str) -> str:
    return f"{repo}@{push(layout, f'{repo}:{tag}')}"
