"""moltbuild.registry.client, `invoke verify`, `invoke tag --source` and skip-unchanged, against real
docker-registry instances (plain, bearer token) and a fault-injecting proxy."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

import pytest

from moltbuild.errors import RegistryError
from moltbuild.registry.client import RegistryClient
from moltbuild.registry.local import LocalRegistry
from moltbuild.settings import Secret
from moltbuild.system.retry import RetryPolicy
from tests.conftest import need_tool
from tests.integration.conftest import (
    build_env,
    head_short,
    htpasswd_file,
    invoke,
    push_env,
    read_report,
    registry_digest,
)
from tests.support.fault_proxy import FaultProxy
from tests.support.registries import TestRegistry
from tests.support.token_server import TokenServer

pytestmark = pytest.mark.integration
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def skopeo_copy(src: str, dest: str, fmt: str, tmp_path: Path) -> str:
    need_tool("skopeo")
    digestfile = tmp_path / f"digest-{fmt}"
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--format",
            fmt,
            "--digestfile",
            str(digestfile),
            f"docker://{src}",
            f"docker://{dest}",
        ],
        check=True,
        capture_output=True,
    )
    return digestfile.read_text().strip()


@pytest.fixture(scope="module")
def pushed(mirror, tmp_path_factory):
    """busybox pushed as OCI and as Docker v2 into t/oci and t/docker, with the tools' digests."""
    tmp = tmp_path_factory.mktemp("skopeo")
    src = f"{mirror.host}/mirror/library/busybox:1.36"
    return {
        "oci": skopeo_copy(src, f"{mirror.host}/t/oci:1", "oci", tmp),
        "docker": skopeo_copy(src, f"{mirror.host}/t/docker:1", "v2s2", tmp),
    }


def client_for(registry: LocalRegistry, **kw) -> RegistryClient:
    return RegistryClient(registry.host, insecure_hosts=[registry.host], **kw)


def test_manifest_digests_for_oci_and_docker_pushes(mirror, pushed):
    client = client_for(mirror)
    oci = client.manifest("t/oci", "1")
    docker = client.manifest("t/docker", "1")
    assert oci.digest == pushed["oci"] and oci.media_type == "application/vnd.oci.image.manifest.v1+json"
    assert docker.digest == pushed["docker"]
    assert docker.media_type == "application/vnd.docker.distribution.manifest.v2+json"
    body = client.manifest("t/oci", "1", method="GET").body
    assert "sha256:" + hashlib.sha256(body).hexdigest() == pushed["oci"]
    assert client.manifest("t/oci", "no-such-tag") is None


def test_multi_platform_index(mirror, pushed):
    client = client_for(mirror)
    src = client.manifest("t/oci", "1", method="GET")
    client.copy("t/oci", "1", "t/multi", "amd64")
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": src.media_type,
                "digest": src.digest,
                "size": len(src.body),
                "platform": {"os": "linux", "architecture": arch},
            }
            for arch in ("amd64", "arm64")
        ],
    }
    body = json.dumps(index).encode()
    digest = client.put_manifest("t/multi", "both", body, OCI_INDEX)
    head = client.manifest("t/multi", "both")
    assert head.digest == digest == "sha256:" + hashlib.sha256(body).hexdigest()
    assert head.media_type == OCI_INDEX
    assert client.image_config("t/multi", "both")["os"] == "linux"
    # an index retagged across repositories brings its platform manifests along
    assert client.copy("t/multi", "both", "t/multi-copy", "v1") == digest
    assert client.manifest("t/multi-copy", src.digest).digest == src.digest


def test_tags_follow_link_pagination(mirror, pushed):
    client = client_for(mirror)
    wanted = {f"p{i}" for i in range(7)}
    for tag in wanted:
        client.copy("t/docker", "1", "t/paged", tag)
    assert set(client.tags("t/paged")) == wanted
    proxy = FaultProxy(mirror.url, paginate_tags=True).start()  # pages tags/list like ghcr.io
    try:
        paged = RegistryClient(proxy.host, insecure_hosts=[proxy.host])
        assert set(paged.tags("t/paged", page_size=2)) == wanted
        assert sum("tags/list" in line for line in proxy.seen) == 4  # 2+2+2+1
    finally:
        proxy.stop()
    with pytest.raises(RegistryError, match="repository t/nothing-here not found"):
        client.tags("t/nothing-here")


def test_catalog_follows_the_real_registrys_pagination(mirror, pushed):
    client = client_for(mirror)
    raw = client.request("GET", "/v2/_catalog?n=1")
    assert 'rel="next"' in raw.headers["Link"]  # distribution 2.8 pages the catalog itself
    names = client.catalog(page_size=1)
    assert {"t/oci", "t/docker", "mirror/library/busybox"} <= set(names)


def test_retag_within_and_across_repositories_mounts_blobs(mirror, pushed):
    client = client_for(mirror)
    assert client.copy("t/docker", "1", "t/docker", "again") == pushed["docker"]
    assert client.copy("t/docker", "1", "t/elsewhere", "v9") == pushed["docker"]
    manifest = json.loads(client.manifest("t/elsewhere", "v9", method="GET").body)
    for desc in [manifest["config"], *manifest["layers"]]:
        assert client.has_blob("t/elsewhere", desc["digest"])
    with pytest.raises(RegistryError, match="not found"):
        client.copy("t/docker", "missing", "t/x", "y")


# -- bearer tokens, the ghcr.io way --------------------------------------------------------------


@pytest.fixture()
def token_registry(tmp_path, build_tools):
    tokens = TokenServer(tmp_path / "tokens", {"octo": "s3cret-token"}).start()
    registry = TestRegistry(tmp_path / "tokreg", token_auth=tokens.registry_auth()).start()
    yield registry, tokens
    registry.stop()
    tokens.stop()


def test_bearer_challenge_with_credentials_and_token_cache(token_registry, mirror, pushed):
    registry, tokens = token_registry
    client = client_for(registry, username="octo", password=Secret("s3cret-token"))
    body = client_for(mirror).manifest("t/docker", "1", method="GET")
    # blobs must exist before the manifest: copy them through a plain upload
    src = client_for(mirror)
    doc = json.loads(body.body)
    for desc in [doc["config"], *doc["layers"]]:
        resp = client.request("POST", "/v2/team/app/blobs/uploads/", scope="repository:team/app:pull,push")
        assert resp.status_code == 202, resp.text
        put = client.request(
            "PUT",
            f"{resp.headers['Location']}&digest={desc['digest']}",
            scope="repository:team/app:pull,push",
            data=src.blob("t/docker", desc["digest"]),
        )
        assert put.status_code == 201, put.text
    assert client.put_manifest("team/app", "v1", body.body, body.media_type) == pushed["docker"]
    before = len(tokens.requests)
    for _ in range(3):
        assert client.manifest("team/app", "v1").digest == pushed["docker"]
    assert len(tokens.requests) - before == 1, "the pull token is cached per scope"
    anonymous = client_for(registry)
    assert anonymous.manifest("team/app", "v1").digest == pushed["docker"]  # pull-only token
    with pytest.raises(RegistryError, match=r"403 forbidden|401 unauthorized"):
        anonymous.put_manifest("team/app", "v2", body.body, body.media_type)
    wrong = client_for(registry, username="octo", password=Secret("nope"))
    with pytest.raises(RegistryError, match="token service refused user 'octo'") as err:
        wrong.manifest("team/app", "v1")
    assert "nope" not in str(err.value)


def test_build_push_and_verify_through_bearer_auth(git_project, mirror, storage_root, token_registry):
    registry, _ = token_registry
    env = push_env(
        mirror,
        storage_root,
        registry,
        REGISTRY_USERNAME="octo",
        REGISTRY_PASSWORD="s3cret-token",
    )
    out = invoke(git_project, "build", "--push", "--api-only", "--backend", "buildah", env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    verified = invoke(git_project, "verify", "--json", env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["ok"] is True
    assert "s3cret-token" not in out.stdout + out.stderr + verified.stdout


# -- retries through a fault-injecting proxy ----------------------------------------------------


@pytest.mark.parametrize("faults", [["503", "503"], ["reset", "reset"], ["503", "reset", "503"]])
def test_transient_faults_are_retried_within_bounds(mirror, pushed, faults):
    proxy = FaultProxy(mirror.url, faults).start()
    try:
        client = RegistryClient(
            proxy.host, insecure_hosts=[proxy.host], retry=RetryPolicy(attempts=5, base=0.05, max_wait=10)
        )
        assert client.manifest("t/docker", "1").digest == pushed["docker"]
        assert len(proxy.seen) == len(faults) + 1
    finally:
        proxy.stop()


@pytest.mark.parametrize(
    "fault, message", [("503", "answered HTTP 503"), ("reset", "unreachable after 3 attempts")]
)
def test_persistent_faults_fail_clearly_and_boundedly(mirror, fault, message):
    proxy = FaultProxy(mirror.url, default=fault).start()
    try:
        client = RegistryClient(
            proxy.host, insecure_hosts=[proxy.host], retry=RetryPolicy(attempts=3, base=0.05, max_wait=5)
        )
        start = time.monotonic()
        with pytest.raises(RegistryError, match=message):
            client.manifest("t/docker", "1")
        assert time.monotonic() - start < 10
        assert len(proxy.seen) == 3  # first try + 2 retries, never more
    finally:
        proxy.stop()


def test_404_and_401_are_never_retried(mirror, tmp_path):
    proxy = FaultProxy(mirror.url).start()
    try:
        client = RegistryClient(
            proxy.host, insecure_hosts=[proxy.host], retry=RetryPolicy(attempts=5, base=0.05)
        )
        assert client.manifest("t/none", "x") is None
        assert len(proxy.seen) == 1
    finally:
        proxy.stop()
    password = "right-password-0123"
    with TestRegistry(
        tmp_path / "authreg", htpasswd=htpasswd_file(tmp_path / "htpasswd", "ci", password)
    ) as reg:
        proxy = FaultProxy(reg.url).start()
        try:
            anonymous = RegistryClient(
                proxy.host, insecure_hosts=[proxy.host], retry=RetryPolicy(attempts=5, base=0.05)
            )
            with pytest.raises(RegistryError, match="401 unauthorized"):
                anonymous.manifest("t/any", "x")
            assert len(proxy.seen) == 1  # the registry's 401, not retried
            proxy.seen.clear()
            wrong = RegistryClient(
                proxy.host,
                username="ci",
                password=Secret("wrong"),
                insecure_hosts=[proxy.host],
                retry=RetryPolicy(attempts=5),
            )
            with pytest.raises(RegistryError, match=r"401 unauthorized.*user 'ci'"):
                wrong.manifest("t/any", "x")
            assert len(proxy.seen) == 2  # the challenge, then one answer with credentials; never more
        finally:
            proxy.stop()


# -- the acceptance flow, as a user types it -----------------------------------------------------


def workload(folder: Path, *images: str) -> None:
    """folder/deployment.yml: one Deployment running `images`, one container each."""
    containers = "".join(f"        - {{name: c{i}, image: {image}}}\n" for i, image in enumerate(images))
    (folder / "deployment.yml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\nspec:\n"
        "  selector: {matchLabels: {app: app}}\n  template:\n    metadata: {labels: {app: app}}\n"
        f"    spec:\n      containers:\n{containers}"
    )


def test_verify_kustomization_retag_and_skip_unchanged(git_project, mirror, storage_root, tmp_path):
    env = build_env(mirror, storage_root, "accept")
    first = invoke(git_project, "build", "--push", "--backend", "buildah", env=env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr
    assert invoke(git_project, "verify", env=env).returncode == 0

    sha = f"sha-{head_short(git_project)}"
    api = read_report(git_project)["api"]
    kust = tmp_path / "kustomization.yml"
    # verify checks what kustomize renders: the images the workloads run, after the images: entries
    workload(tmp_path, "ghcr.io/ardenone/moltbook-api", "ghcr.io/ardenone/moltbook-frontend")
    kust.write_text(
        "resources: [deployment.yml]\nimages:\n"
        f"  - name: ghcr.io/ardenone/moltbook-api\n    newName: {api['repository']}\n    newTag: {sha}\n"
        f"  - name: ghcr.io/ardenone/moltbook-frontend\n    newName: {mirror.host}/accept/moltbook-frontend\n"
        "    newTag: never-pushed\n"
    )
    bad = invoke(git_project, "verify", "--kustomization", str(kust), env=env)
    assert bad.returncode != 0
    assert "moltbook-frontend:never-pushed" in bad.stderr + bad.stdout and "missing" in bad.stdout
    workload(tmp_path, "x")
    kust.write_text(
        f"resources: [deployment.yml]\nimages:\n  - name: x\n    newName: {api['repository']}\n"
        f"    newTag: {sha}\n    digest: sha256:{'0' * 64}\n"
    )
    mismatch = invoke(git_project, "verify", "--kustomization", str(kust), "--json", env=env)
    assert mismatch.returncode != 0
    checks = {c["origin"]: c for c in json.loads(mismatch.stdout)["checks"]}
    pinned = checks[f"{kust} images[0]"]  # kustomize renders NAME:TAG@DIGEST: pulled by that digest
    assert (pinned["verdict"], pinned["reason"]) == ("missing", "the registry has no such digest")

    tagged = invoke(
        git_project, "tag", "--source", f"{api['repository']}:{sha}", "--tag", "promoted", env=env
    )
    assert tagged.returncode == 0, tagged.stderr
    assert api["digest"] in tagged.stdout
    name = api["repository"].split("/", 1)[1]
    assert registry_digest(mirror.url, name, "promoted") == api["digest"]

    second = invoke(git_project, "build", "--push", "--backend", "buildah", env=env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr
    assert "] build 1/" not in second.stdout and "unchanged inputs: reused" in second.stdout
    entries = read_report(git_project)
    assert all(e["outcome"] == "reused" for e in entries.values())
    assert entries["api"]["digest"] == api["digest"]
    rebuilt = invoke(
        git_project, "build", "--push", "--api-only", "--rebuild", "--backend", "buildah", env=env
    )
    assert rebuilt.returncode == 0 and "[api] build 1/" in rebuilt.stdout
    assert read_report(git_project)["api"]["outcome"] == "pushed"
