"""`invoke dev --cluster`'s target against the real single-node cluster (`nox -s cluster`): the
stand-in images built and pushed once to the cluster's registry, then ClusterTarget driven
directly: deploy into a dev namespace, answers through the forwarded ports, a synced static file
served without a rebuild, a crashing image and an image that cannot be pulled reported with their
reasons within seconds (and the good image recovering), and close() leaving nothing behind.

Reuses the cluster running on this machine, else starts one when CI=true or MOLTBUILD_TEST_CLUSTER=1,
else skips (under CI=true a cluster that cannot start fails)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT
from tests.integration.conftest import clean_env, invoke
from tests.support.cluster import session
from tests.support.cluster.executor_run import cluster_env

pytestmark = pytest.mark.integration

CRASH_CMD = '["sh", "-c", "echo starting up; echo Error: the crash this test asked for >&2; exit 3"]'


@pytest.fixture(scope="module")
def env():
    with session.cluster_or_skip() as state:
        keys = {k: v for k, v in cluster_env(state).items() if k.startswith(("MOLTBUILD_", "KUBECONFIG"))}
        yield clean_env(**keys, MOLTBUILD_REGISTRY_CACHE="off")


@pytest.fixture(scope="module")
def built(env, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The stand-in project as a git checkout, both images pushed to the cluster's registry."""
    project = tmp_path_factory.mktemp("dev") / "project"
    project.mkdir()
    for name in ("pyproject.toml", "tasks.py", ".gitignore"):
        shutil.copy(ROOT / name, project / name)
    for name in ("api", "moltbook-frontend", "k8s"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    git = ["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "test"]):
        subprocess.run([*git, *args], check=True)
    done = invoke(project, "build", "--push", "--no-smoke", env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((project / "build" / "images.json").read_text())
    return project, {i["name"]: f"{i['repository']}@{i['digest']}" for i in report["images"]}


def buildah(*args: str, root: Path) -> str:
    flags = ["--root", str(root / "root"), "--runroot", str(root / "run"), "--storage-driver", "vfs"]
    out = subprocess.run(["buildah", *flags, *args], check=True, capture_output=True, text=True)
    return out.stdout.strip()


@pytest.fixture(scope="module")
def crash_ref(env, tmp_path_factory) -> str:
    """An image whose command prints an `Error:` line and exits, pushed by digest."""
    root = tmp_path_factory.mktemp("crash")
    base = f"{env['MOLTBUILD_BASE_MIRROR']}/library/busybox:1.36"
    ctr = buildah("from", "--tls-verify=false", base, root=root)
    buildah("config", "--cmd", CRASH_CMD, "--user", "10001:10001", ctr, root=root)
    buildah("commit", "-q", ctr, "localhost/crash", root=root)
    repo = f"{env['MOLTBUILD_REGISTRY']}/dev-crash"
    digest = root / "digest"
    buildah(
        "push",
        "--tls-verify=false",
        "--digestfile",
        str(digest),
        "localhost/crash",
        f"docker://{repo}:t",
        root=root,
    )
    ref = f"{repo}@{digest.read_text().strip()}"
    shutil.rmtree(root, ignore_errors=True)
    return ref


class Events(list):
    def __call__(self, event) -> None:
        self.append(event)

    def of(self, kind: str, image: str | None = None) -> list:
        return [e for e in self if e.kind == kind and (image is None or e.image == image)]


@pytest.fixture(scope="module")
def target(env, built):
    from moltbuild.dev.cluster import ClusterTarget
    from moltbuild.flows.context import Session

    project, _ = built
    before = set(threading.enumerate())
    context = Session.create(environ=env, project_root=project)
    made = ClusterTarget(
        context,
        namespace=f"dev-{uuid.uuid4().hex[:6]}",
        images=("api", "frontend"),
        synced=frozenset({"frontend"}),
    )
    made.threads_before = before
    yield made
    made.close(keep=False)


@pytest.fixture(scope="module")
def deployed(target, built):
    events = Events()
    start = time.monotonic()
    ok = target.deploy(built[1], events, start)
    print(f"deploy -> ready: {time.monotonic() - start:.1f} s")
    return ok, events


def url(events: Events, image: str) -> str:
    (found,) = events.of("url", image)
    return found.detail["url"]


def test_both_images_roll_out_and_answer_through_their_forwarded_ports(deployed, target, built):
    ok, events = deployed
    assert ok, [e for e in events if e.kind == "failed"]
    assert {e.image for e in events.of("ready")} == {"api", "frontend"}
    assert requests.get(url(events, "api") + "healthz", timeout=10).json()["status"] == "ok"
    assert "<html" in requests.get(url(events, "frontend"), timeout=10).text.lower()
    assert any(e.image == "api" for e in events.of("log")), "the api's log lines are streamed"
    for line in target.describe(built[1]):
        assert "ghcr.io" not in line, "every project image is replaced by the ref built"


def test_a_synced_static_file_is_served_without_a_rebuild(deployed, target, tmp_path):
    _, events = deployed
    page = tmp_path / "synced.html"
    page.write_text(f"<p>synced {uuid.uuid4().hex}</p>\n")
    start = time.monotonic()
    assert target.sync("frontend", [(page, "/www/synced.html")], events, start)
    for _ in range(4):  # two replicas, each connection to one of them: every one has the file
        assert requests.get(url(events, "frontend") + "synced.html", timeout=10).text == page.read_text()
    print(f"sync -> served: {time.monotonic() - start:.2f} s")


def test_a_crashing_image_fails_with_its_log_lines_and_the_good_one_recovers(
    deployed, target, built, crash_ref
):
    events = Events()
    start = time.monotonic()
    assert not target.deploy({"api": crash_ref}, events, start)
    (failed,) = events.of("failed", "api")
    assert time.monotonic() - start < 30
    assert failed.detail["reason"].startswith("crash:")
    assert any("Error: the crash this test asked for" in line for line in failed.detail["lines"])
    events.clear()
    assert target.deploy({"api": built[1]["api"]}, events, time.monotonic())
    assert events.of("ready", "api")


def test_an_image_that_cannot_be_pulled_fails_naming_the_pull_error(deployed, target, built, env):
    events = Events()
    missing = f"{env['MOLTBUILD_REGISTRY']}/moltbook-api@sha256:{'0' * 64}"
    start = time.monotonic()
    assert not target.deploy({"api": missing}, events, start)
    (failed,) = events.of("failed", "api")
    assert time.monotonic() - start < 30
    assert failed.detail["reason"].startswith("pull:"), failed.detail
    events.clear()
    assert target.deploy({"api": built[1]["api"]}, events, time.monotonic())
    assert requests.get(url(deployed[1], "api") + "healthz", timeout=10).status_code == 200


def test_close_leaves_no_object_forward_or_thread(deployed, target, env):
    from kubernetes import client, config

    urls = [e.detail["url"] for e in deployed[1].of("url")]
    target.close(keep=False)
    api = config.new_client_from_config(env["KUBECONFIG"])
    selector = f"moltbuild.dev/session={target.session_id}"
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    for lister in (
        core.list_pod_for_all_namespaces,
        core.list_service_for_all_namespaces,
        apps.list_deployment_for_all_namespaces,
        apps.list_replica_set_for_all_namespaces,
    ):
        assert lister(label_selector=selector).items == [], lister.__name__
    for address in urls:
        port = int(address.rsplit(":", 1)[1].strip("/"))
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2)
    deadline = time.monotonic() + 10  # the client's port-forward proxies end after their sockets
    while time.monotonic() < deadline and set(threading.enumerate()) - target.threads_before:
        time.sleep(0.1)
    assert not set(threading.enumerate()) - target.threads_before


def test_invoke_dev_cluster_serves_an_edit_and_a_synced_file_then_ctrl_c_leaves_nothing(env, built):
    """The issue's acceptance, as a user types it: `invoke dev --cluster --json` prints a url for
    each image; an edit to app.py is answered there after a rebuild, a synced frontend file without
    one; SIGINT then leaves no object in the dev namespace, no forward and no changed file."""
    from tests.integration.test_dev_local import Loop, _get, _served

    project, _ = built
    namespace = f"dev-loop-{uuid.uuid4().hex[:6]}"
    loop = Loop(
        project, {**env, "MOLTBUILD_DEV_NAMESPACE": namespace, "MOLTBUILD_DEV_DEBOUNCE": "0.2"}, "--cluster"
    )
    try:
        urls = {}
        for name in ("api", "frontend"):
            seen = [e for e in loop.seen if e["event"] == "url" and e["image"] == name]
            urls[name] = (seen[0] if seen else loop.wait("url", name, timeout=240))["url"]
        assert '"status": "ok"' in _get(urls["api"] + "healthz")

        app = project / "api" / "moltbook_api" / "app.py"
        good = app.read_text()
        app.write_text(good.replace('{"status": "ok"}', '{"status": "ok", "dev": "cluster"}'))
        _served(urls["api"] + "healthz", '"dev": "cluster"', timeout=30)
        built_event = next(e for e in loop.seen if e["event"] == "built" and e["image"] == "api")
        assert built_event["ref"].startswith(env["MOLTBUILD_REGISTRY"]) and "@sha256:" in built_event["ref"]

        css = project / "moltbook-frontend" / "src" / "styles.css"
        style = css.read_text()
        mark = len(loop.seen)
        css.write_text(style + "\n/* synced-in-cluster */\n")
        _served(urls["frontend"] + "styles.css", "synced-in-cluster", timeout=5)
        loop.wait("synced", "frontend", timeout=5)
        assert loop.builds_since(mark, "frontend") == 0
        app.write_text(good)
        css.write_text(style)
    finally:
        os.killpg(loop.proc.pid, signal.SIGINT) if loop.proc.poll() is None else None
        code = loop.proc.wait(timeout=90)
    stderr = "".join(loop.stderr)
    assert code == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    for url in urls.values():
        port = int(url.rsplit(":", 1)[1].strip("/"))
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"{url} still forwarded after Ctrl-C"
    left = subprocess.run(
        [
            "kubectl",
            "get",
            "all,configmap,secret",
            "-n",
            namespace,
            "-l",
            "moltbuild.dev/session",
            "-o",
            "name",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert left.stdout.strip() == "", left.stdout
    status = subprocess.run(
        ["git", "-C", str(project), "status", "--porcelain"], capture_output=True, text=True
    )
    assert status.stdout == ""
