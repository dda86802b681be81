"""`invoke build` with buildah against real registries, for real."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest
import requests

from moltbuild.registry.client import ACCEPT
from moltbuild.registry.local import free_port
from tests.conftest import need, need_tool
from tests.integration.conftest import (
    assert_report_matches_registry,
    build_env,
    clean_env,
    head_short,
    htpasswd_file,
    interrupt_when,
    invoke,
    leftover_temp_dirs,
    push_env,
    read_report,
    registry_labels,
    release_storage,
    run_in_image,
    spied_calls,
    spy_on,
)
from tests.support import proctree
from tests.support.proctree import ProcessTree
from tests.support.registries import TestRegistry

pytestmark = pytest.mark.integration


def test_buildah_builds_and_pushes_both_apps(git_project, mirror, storage_root):
    env = build_env(mirror, storage_root, "bboth")
    out = invoke(git_project, "build", "--push", "--backend", "buildah", env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    entries = assert_report_matches_registry(git_project, mirror.url, {"api", "frontend"})
    sha = f"sha-{head_short(git_project)}"
    for entry in entries.values():
        assert entry["tags"][:3] == [sha, "main", "latest"] and entry["backend"] == "buildah"
        assert entry["tags"][3].startswith("input-") and len(entry["tags"]) == 4
        name = entry["repository"].split("/", 1)[1]
        tags = requests.get(f"{mirror.url}/v2/{name}/tags/list", timeout=10).json()["tags"]
        assert sha in tags
        labels = registry_labels(mirror.url, name, sha)
        assert labels["dev.moltbuild.input-digest"] == entry["input_digest"]
        assert labels["org.opencontainers.image.revision"].startswith(sha[4:])
    # output lines of the parallel builds carry the image name
    assert "[api] " in out.stdout and "[frontend] " in out.stdout
    assert "storage driver overlay" in out.stdout


def test_api_only_builds_only_the_api_and_it_serves_health(git_project, mirror, storage_root):
    env = build_env(mirror, storage_root, "bapi")
    out = invoke(git_project, "build", "--api-only", "--backend", "buildah", "--tag", "rc1", env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    entries = read_report(git_project)
    assert set(entries) == {"api"} and entries["api"]["pushed"] is False
    assert "rc1" in entries["api"]["tags"]
    # The image really runs: start the server inside it and ask /healthz.
    ref = f"{entries['api']['repository']}:rc1"
    probe = (
        "import threading,urllib.request,json; from moltbook_api.app import make_server; "
        "s=make_server('127.0.0.1',0); threading.Thread(target=s.serve_forever,daemon=True).start(); "
        "print(urllib.request.urlopen(f'http://127.0.0.1:{s.server_address[1]}/healthz').read().decode())"
    )
    res = run_in_image(storage_root, ref, ["python3", "-c", probe])
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == {"status": "ok"}


def test_dry_run_starts_no_build_or_push(git_project, mirror, storage_root, tmp_path):
    """A recording wrapper stands first on PATH: only read-only probes may reach buildah."""
    path, calls = spy_on("buildah", tmp_path)
    env = build_env(
        mirror,
        storage_root,
        "bdry",
        PATH=path,
        REGISTRY_USERNAME="ci",
        REGISTRY_PASSWORD=CANARY,
        GITHUB_TOKEN=CANARY,
    )
    out = invoke(git_project, "build", "--push", "--dry-run", "--backend", "buildah", env=env)
    assert out.returncode == 0, out.stderr
    assert " bud " in out.stdout and " push " in out.stdout  # the plan shows the commands
    assert "login" in out.stdout and "--password-stdin" in out.stdout
    assert CANARY not in out.stdout + out.stderr
    recorded = spied_calls(calls)
    assert all(argv[0] == "version" for argv in recorded), recorded
    assert not (git_project / "build" / "images.json").exists()


def test_one_failing_image_keeps_the_other_in_the_report(git_project, mirror, storage_root):
    dockerfile = git_project / "moltbook-frontend" / "Dockerfile"
    dockerfile.write_text(
        dockerfile.read_text().replace(
            "COPY src/ /src/", "COPY src/ /src/\nRUN echo 'the frontend build broke here' >&2; exit 3"
        )
    )
    env = build_env(mirror, storage_root, "bfail")
    out = invoke(git_project, "build", "--push", "--backend", "buildah", env=env)
    assert out.returncode != 0
    assert "frontend" in out.stderr and "the frontend build broke here" in out.stderr
    entries = read_report(git_project)
    assert entries["api"]["pushed"] is True and entries["api"]["outcome"] == "pushed"
    assert entries["frontend"]["outcome"] == "failed" and entries["frontend"]["pushed"] is False


def _overlay_mount(tmp_path: Path) -> Path:
    dirs = {n: tmp_path / n for n in ("lower", "upper", "work", "merged")}
    for d in dirs.values():
        d.mkdir()
    libc = ctypes.CDLL(None, use_errno=True)
    opts = f"lowerdir={dirs['lower']},upperdir={dirs['upper']},workdir={dirs['work']}"
    assert libc.mount(b"overlay", str(dirs["merged"]).encode(), b"overlay", 0, opts.encode()) == 0
    return dirs["merged"]


def _path_without(tool: str, tmp_path: Path) -> str:
    """A PATH with every tool of this machine except `tool`: as if it were not installed."""
    bindir = tmp_path / "path-without"
    bindir.mkdir()
    for directory in os.environ["PATH"].split(":"):
        if not os.path.isdir(directory):
            continue
        for entry in os.listdir(directory):
            link = bindir / entry
            if entry != tool and not link.exists():
                link.symlink_to(os.path.join(directory, entry))
    return str(bindir)


def test_nested_overlay_without_fuse_builds_with_vfs_and_refuses_docker(git_project, mirror, tmp_path):
    merged = _overlay_mount(tmp_path)
    try:
        env = build_env(mirror, merged / "storage", "bnested", PATH=_path_without("fuse-overlayfs", tmp_path))
        doctor = invoke(git_project, "doctor", "--json", env=env)
        report = json.loads(doctor.stdout)
        assert report["storage"]["nested"] and report["storage"]["buildah_driver"] == "vfs"
        out = invoke(git_project, "build", "--push", "--verbose", env=env)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr
        assert "auto picked buildah" in out.stdout and "--storage-driver vfs" in out.stdout
        assert_report_matches_registry(git_project, mirror.url, {"api", "frontend"})
        refused = invoke(git_project, "build", "--api-only", "--backend", "docker", env=env)
        assert refused.returncode != 0
        assert "refusing the docker backend" in refused.stderr and "buildah" in refused.stderr
        forced = invoke(
            git_project, "build", "--api-only", "--backend", "docker", "--force", "--dry-run", env=env
        )
        assert "refusing" not in forced.stderr
    finally:
        release_storage(merged / "storage", "vfs")
        ctypes.CDLL(None).umount2(str(merged).encode(), 2)


def test_nested_overlay_with_fuse_overlayfs_keeps_the_overlay_driver(git_project, mirror, tmp_path):
    need_tool("fuse-overlayfs")
    need(os.path.exists("/dev/fuse"), "/dev/fuse is missing")
    merged = _overlay_mount(tmp_path)
    storage = merged / "storage"
    try:
        env = build_env(mirror, storage, "bfuse")
        out = invoke(git_project, "build", "--push", "--api-only", "-v", env=env)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr
        assert "storage driver overlay via fuse-overlayfs" in out.stdout
        assert "overlay.mount_program=" in out.stdout
        assert_report_matches_registry(git_project, mirror.url, {"api"})
    finally:
        release_storage(storage, "overlay", "overlay.mount_program=/usr/bin/fuse-overlayfs")
        ctypes.CDLL(None).umount2(str(merged).encode(), 2)


CANARY = "canary-tok3n-0123456789-not-a-real-one"


@pytest.fixture()
def auth_registry(tmp_path, build_tools):
    registry = TestRegistry(tmp_path / "authreg", htpasswd=htpasswd_file(tmp_path / "htpasswd", "ci", CANARY))
    registry.start()
    yield registry
    registry.stop()


def _sample_argv(
    tree: ProcessTree, stop: threading.Event, seen: list[str], envs: list[tuple[str, str]]
) -> None:
    while not stop.is_set():
        seen += tree.cmdlines()
        envs += [(cmd, env) for cmd, env in tree.environs() if "-m invoke" not in cmd]  # children only
        stop.wait(0.01)


def test_basic_auth_push_never_leaks_the_secret(git_project, mirror, storage_root, auth_registry, tmp_path):
    """The registry password, GITHUB_TOKEN and the signing key's password are one canary: never
    in any child's argv, output, report, log or image; only cosign gets it, as COSIGN_PASSWORD."""
    need_tool("cosign", "syft")
    keys = tmp_path / "keys"
    keys.mkdir()
    subprocess.run(
        ["cosign", "generate-key-pair"],
        cwd=keys,
        env={"PATH": os.environ["PATH"], "COSIGN_PASSWORD": CANARY},
        check=True,
        capture_output=True,
    )
    env = push_env(
        mirror,
        storage_root,
        auth_registry,
        REGISTRY_USERNAME="ci",
        REGISTRY_PASSWORD=CANARY,
        GITHUB_TOKEN=CANARY,
        MOLTBUILD_ATTEST="on",
        MOLTBUILD_SIGNING_KEY=str(keys / "cosign.key"),
        MOLTBUILD_SIGNING_PASSWORD=CANARY,
    )
    need(proctree.available(), "needs a cgroup of its own to watch only its process tree (root)")
    stop, seen, envs = threading.Event(), [], []
    with ProcessTree() as tree:
        sampler = threading.Thread(target=_sample_argv, args=(tree, stop, seen, envs), daemon=True)
        sampler.start()
        try:
            out = invoke(
                git_project, "build", "--push", "--backend", "buildah", "-v", env=env, preexec_fn=tree.enter
            )
        finally:
            stop.set()
            sampler.join()
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    assert any("buildah" in argv and "bud" in argv for argv in seen), "sampler saw no build"
    assert any("cosign sign" in argv for argv in seen), "sampler saw no signing"
    assert not [argv for argv in seen if CANARY in argv]
    leaked = [cmd for cmd, environ in envs if CANARY in environ.replace(f"COSIGN_PASSWORD={CANARY}", "")]
    assert envs and not leaked  # no child inherits it; cosign gets the key's password, by name
    assert not [
        cmd for cmd, environ in envs if f"COSIGN_PASSWORD={CANARY}" in environ and "cosign" not in cmd
    ]
    assert "signed, SBOM" in out.stdout
    assert CANARY not in out.stdout + out.stderr
    assert CANARY not in (git_project / "build" / "images.json").read_text()
    assert CANARY not in "".join(p.read_text() for p in (git_project / "build" / "logs").glob("*.log"))
    entries = assert_report_matches_registry(
        git_project, auth_registry.url, {"api", "frontend"}, auth=("ci", CANARY)
    )
    for entry in entries.values():  # the pushed config and history carry no secret either
        name = entry["repository"].split("/", 1)[1]
        api = f"{auth_registry.url}/v2/{name}"
        manifest = requests.get(
            f"{api}/manifests/{entry['digest']}", headers={"Accept": ACCEPT}, auth=("ci", CANARY), timeout=10
        ).json()
        config = requests.get(f"{api}/blobs/{manifest['config']['digest']}", auth=("ci", CANARY), timeout=10)
        assert config.ok and "history" in config.json() and CANARY not in config.text
    dry = invoke(git_project, "build", "--push", "--dry-run", "--rebuild", env=env)
    assert dry.returncode == 0 and "auth" in dry.stdout and CANARY not in dry.stdout + dry.stderr


def test_wrong_credentials_fail_before_any_build(git_project, mirror, storage_root, auth_registry):
    env = push_env(
        mirror,
        storage_root,
        auth_registry,
        REGISTRY_USERNAME="ci",
        REGISTRY_PASSWORD="wrong-password",
    )
    out = invoke(git_project, "build", "--push", "--backend", "buildah", env=env)
    assert out.returncode != 0
    assert "rejected the credentials from REGISTRY_USERNAME/REGISTRY_PASSWORD" in out.stderr
    assert "] build 1/" not in out.stdout and "wrong-password" not in out.stdout + out.stderr
    missing = invoke(
        git_project,
        "build",
        "--push",
        env=clean_env(
            **{k: v for k, v in env.items() if k not in ("REGISTRY_USERNAME", "REGISTRY_PASSWORD")}
        ),
    )
    assert missing.returncode != 0 and "REGISTRY_USERNAME and REGISTRY_PASSWORD" in missing.stderr


def test_ghcr_push_without_token_names_the_setting(git_project, mirror, storage_root):
    env = build_env(mirror, storage_root, "x")
    env.pop("MOLTBUILD_REGISTRY")
    out = invoke(git_project, "build", "--push", "--backend", "buildah", env=env)
    assert out.returncode != 0
    assert "ghcr.io needs GITHUB_TOKEN" in out.stderr and "] build 1/" not in out.stdout


def test_tls_registry_with_private_ca(git_project, mirror, storage_root, tls_files, tmp_path):
    with TestRegistry(tmp_path / "tlsreg", tls=tls_files) as registry:
        env = build_env(
            mirror,
            storage_root,
            "x",
            MOLTBUILD_REGISTRY=f"{registry.host}/tls",
            MOLTBUILD_REGISTRY_CA=str(tls_files.ca),
        )
        out = invoke(git_project, "build", "--push", "--api-only", "--backend", "buildah", "-v", env=env)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr
        assert "--cert-dir" in out.stdout
        assert_report_matches_registry(git_project, registry.url, {"api"}, verify=str(tls_files.ca))


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_signal_stops_every_child_and_removes_the_auth_files(
    git_project, mirror, storage_root, tmp_path, sig, code
):
    """Watches only its own process tree (a cgroup of its own): other builds may run meanwhile."""
    need(proctree.available(), "needs a cgroup of its own to watch only its process tree (root)")
    dockerfile = git_project / "moltbook-frontend" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace("COPY src/ /src/", "COPY src/ /src/\nRUN sleep 120"))
    private_tmp = tmp_path / "tmp"  # where the run keeps its auth files
    private_tmp.mkdir()
    env = build_env(
        mirror,
        storage_root,
        "bint",
        TMPDIR=str(private_tmp),
        REGISTRY_USERNAME="ci",
        REGISTRY_PASSWORD=CANARY,
    )
    with ProcessTree() as tree:

        def building() -> bool:  # a build step runs, and the run's auth file is on disk
            cmds = tree.cmdlines()
            return any("sleep 120" in c for c in cmds) and bool(
                list(private_tmp.glob("moltbuild-*/auth.json"))
            )

        returncode, err = interrupt_when(
            git_project, ["build", "--push", "--backend", "buildah", "--rebuild"], env, tree, building, sig
        )
        assert returncode == code, err
        assert tree.wait_empty(timeout=5), f"left running: {tree.cmdlines()}"
    assert not leftover_temp_dirs(private_tmp), "a temp dir (auth files) outlived the run"
    assert CANARY not in err


def test_push_and_tag_act_on_the_last_build(git_project, mirror, storage_root):
    env = build_env(mirror, storage_root, "bpush")
    built = invoke(git_project, "build", "--api-only", "--backend", "buildah", env=env)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr
    assert read_report(git_project)["api"]["outcome"] == "built"
    pushed = invoke(git_project, "push", env=env)
    assert pushed.returncode == 0, pushed.stdout[-2000:] + pushed.stderr
    entry = assert_report_matches_registry(git_project, mirror.url, {"api"})["api"]
    tagged = invoke(git_project, "tag", "--tag", "rc2", env=env)
    assert tagged.returncode == 0, tagged.stdout[-2000:] + tagged.stderr
    entries = assert_report_matches_registry(git_project, mirror.url, {"api"})
    assert "rc2" in entries["api"]["tags"] and entries["api"]["digest"] == entry["digest"]
    no_tag = invoke(git_project, "tag", env=env)
    assert no_tag.returncode != 0 and "--tag" in no_tag.stderr


def test_multi_platform_build_pushes_an_index(git_project, mirror, storage_root):
    """Two platforms from one Dockerfile: buildah builds a manifest list and pushes it whole.
    The base is the offline two-platform busybox stand-in (see tests/support/offline_bases.py)."""
    dockerfile = git_project / "moltbook-frontend" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace("busybox:1.36", "busybox:1.36-multi"))
    env = build_env(mirror, storage_root, "bmulti")
    native = invoke(git_project, "build", "--frontend-only", "--no-smoke", "--backend", "buildah", env=env)
    assert native.returncode == 0, native.stdout[-2000:]  # the same local name, as a plain image
    multi = (
        "build",
        "--push",
        "--frontend-only",
        "--backend",
        "buildah",
        "--platform",
        "linux/amd64,linux/arm64",
    )
    out = invoke(git_project, *multi, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    again = invoke(git_project, *multi, "--rebuild", env=env)  # a second list, not entries added twice
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr
    entry = assert_report_matches_registry(git_project, mirror.url, {"frontend"})["frontend"]
    assert entry["platforms"] == ["linux/amd64", "linux/arm64"]
    name = entry["repository"].split("/", 1)[1]
    index = requests.get(
        f"{mirror.url}/v2/{name}/manifests/{entry['tags'][0]}", headers={"Accept": ACCEPT}, timeout=10
    ).json()
    archs = sorted(m["platform"]["architecture"] for m in index["manifests"])
    assert archs == ["amd64", "arm64"]
    single = invoke(git_project, "build", "--api-only", "--backend", "buildah", env=env)
    assert single.returncode == 0
    assert read_report(git_project)["api"]["platforms"] == ["linux/amd64"]


def test_frontend_image_serves_health_and_the_baked_api_url(git_project, mirror, storage_root):
    pyproject = git_project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace('API_BASE_URL = "/api"', 'API_BASE_URL = "https://api.example.test/v9"')
    )
    env = build_env(mirror, storage_root, "bfront")
    out = invoke(git_project, "build", "--frontend-only", "--backend", "buildah", "--tag", "t1", env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    ref = f"{read_report(git_project)['frontend']['repository']}:t1"
    port = free_port()
    # httpd in the foreground, stopped by the script: nothing outlives the test
    script = (
        f"httpd -f -p 127.0.0.1:{port} -h /www & pid=$!; sleep 0.5; "
        f"wget -q -O- http://127.0.0.1:{port}/healthz && wget -q -O- http://127.0.0.1:{port}/config.js; "
        "rc=$?; kill $pid; exit $rc"
    )
    res = run_in_image(storage_root, ref, ["sh", "-c", script], user="10001:10001", timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ok\n")
    assert 'apiBaseUrl: "https://api.example.test/v9"' in res.stdout
