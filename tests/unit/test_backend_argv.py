"""Backends build their commands as pure argv lists: checked here as tables."""

import os
from pathlib import Path

import pytest

from moltbuild.backends.contract import PUSH_RETRY, PushTarget, retry_transient
from moltbuild.backends.selection import make_backend
from moltbuild.errors import CommandError
from moltbuild.plan.planner import ImagePlan
from moltbuild.refs import ImageRef
from moltbuild.settings import load_settings
from moltbuild.system.host import StorageVerdict
from moltbuild.system.processes import Runner
from moltbuild.system.retry import Clock
from tests.unit.verdicts import storage_verdict


def image(**kw) -> ImagePlan:
    base = dict(
        name="api",
        ref=ImageRef.parse("reg:5000/ns/moltbook-api", "test"),
        tags=("sha-abc1234", "main"),
        context=Path("/ctx"),
        dockerfile=Path("/ctx/Dockerfile"),
        build_args={"VERSION": "v"},
        labels={"a.b": "c"},
        target=None,
        platforms=(),
        input_digest="sha256:" + "1" * 64,
        bases=(),
    )
    return ImagePlan(**(base | kw))


def target(img: ImagePlan, source: str = "sha256:" + "e" * 64) -> PushTarget:
    return PushTarget(img.name, img.ref, img.tags, source, img.platforms)


def storage(overlay_ok=True, fuse=None) -> StorageVerdict:
    """`overlay_ok=False`: the graphroot is on nested overlay."""
    return storage_verdict(nested=not overlay_ok, fuse=fuse, fstype="ext4", method="mount")


def backend(name, tmp_path, environ=None, verdict=None):
    settings = load_settings(tmp_path, environ=environ or {}, tool_config={})
    b = make_backend(name, Runner(environ=os.environ), settings, verdict or storage(), dry_run=True)
    b.workdir = tmp_path
    return b


@pytest.mark.parametrize(
    "verdict, root, expected",
    [
        (storage(), None, ["buildah", "--storage-driver", "overlay"]),
        (
            storage(False, "/usr/bin/fuse-overlayfs"),
            None,
            [
                "buildah",
                "--storage-driver",
                "overlay",
                "--storage-opt",
                "overlay.mount_program=/usr/bin/fuse-overlayfs",
            ],
        ),
        (
            storage_verdict(nested=True, path="/home/u/g"),
            "~/g",
            ["buildah", "--storage-driver", "vfs", "--root", "/home/u/g", "--runroot", "/home/u/g-run"],
        ),
    ],
)
def test_buildah_global_flags_follow_the_storage_probe(tmp_path, verdict, root, expected):
    """--root is the path the probe tested (expanded), never the setting's raw text."""
    env = {"MOLTBUILD_STORAGE_ROOT": root} if root else {}
    assert backend("buildah", tmp_path, env, verdict).global_argv() == expected


def test_buildah_build_argv(tmp_path):
    argv = backend("buildah", tmp_path).build_argv(image(target="final"), no_cache=True)
    assert argv[:4] == ["buildah", "--storage-driver", "overlay", "bud"]
    assert argv[argv.index("--isolation") + 1] == "chroot"
    assert argv[argv.index("--format") + 1] == "oci"  # reproducible; MOLTBUILD_IMAGE_FORMAT=docker keeps it
    assert argv[argv.index("-t") : argv.index("-t") + 2] == ["-t", "reg:5000/ns/moltbook-api:sha-abc1234"]
    assert "--build-arg" in argv and "VERSION=v" in argv and "a.b=c" in argv
    assert argv[-4:] == ["--target", "final", "--no-cache", "/ctx"]


def test_buildah_multi_platform_builds_a_manifest(tmp_path):
    b = backend("buildah", tmp_path)
    img = image(platforms=("linux/amd64", "linux/arm64"))
    argv = b.build_argv(img)
    assert argv[argv.index("--platform") + 1] == "linux/amd64,linux/arm64"
    assert argv[argv.index("--manifest") + 1] == img.refs[0] and "-t" not in argv
    push = b.push_argv(target(img, img.refs[0]), "main", "/d")
    assert push[3:6] == ["manifest", "push", "--all"]
    assert push[-2:] == [img.refs[0], f"docker://{img.refs[1]}"]


@pytest.mark.parametrize(
    "environ, tls",
    [
        ({"MOLTBUILD_INSECURE_REGISTRIES": "reg:5000"}, ["--tls-verify=false"]),
        ({"MOLTBUILD_REGISTRY_CA": "ca.pem"}, ["--cert-dir"]),  # made in tmp_path below
        ({}, []),
    ],
)
def test_buildah_push_argv_tls(tmp_path, environ, tls, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    b = backend("buildah", tmp_path, environ)
    argv = b.push_argv(target(image()), "main", "/d/digest")
    assert argv[3] == "push" and argv[-2:] == [
        "sha256:" + "e" * 64,  # pushed by image ID: another run's image of the same name cannot slip in
        "docker://reg:5000/ns/moltbook-api:main",
    ]
    assert argv[argv.index("--digestfile") + 1] == "/d/digest"
    for flag in tls:
        assert flag in argv
    assert "--tls-verify=false" in argv if tls == ["--tls-verify=false"] else "--tls-verify=false" not in argv


@pytest.mark.parametrize(
    "buildx, head", [(False, ["docker", "build"]), (True, ["docker", "buildx", "build", "--load"])]
)
def test_docker_build_argv(tmp_path, buildx, head):
    argv = backend("docker", tmp_path).build_argv(image(platforms=("linux/arm64",)), buildx=buildx)
    assert argv[: len(head)] == head
    assert argv[argv.index("--platform") + 1] == "linux/arm64" and argv[-1] == "/ctx"
    assert argv.count("-t") == 2


def fails(*tails):
    calls = []

    def action():
        calls.append(1)
        if len(calls) <= len(tails):
            raise CommandError(["buildah", "push"], 1, tails[len(calls) - 1])
        return "done"

    return action, calls


def test_retry_transient_retries_network_errors_only():
    naps: list[float] = []
    policy = PUSH_RETRY.but(clock=Clock(sleep=naps.append))
    action, calls = fails("read: connection reset by peer", "received unexpected HTTP status: 503")
    assert retry_transient(action, say=lambda _: None, policy=policy) == "done" and len(calls) == 3
    assert naps == [2, 4]
    action, calls = fails("unauthorized: authentication required")
    with pytest.raises(CommandError):
        retry_transient(action, say=lambda _: None, policy=policy)
    assert len(calls) == 1
    action, calls = fails("timeout", "timeout", "timeout")
    with pytest.raises(CommandError):
        retry_transient(action, say=lambda _: None, policy=policy)
    assert len(calls) == 3


def test_runner_masks_secrets_and_refuses_them_in_argv():
    runner = Runner(environ=os.environ, dry_run=True, secrets=["s3cret"])
    assert runner.describe(["tool", "--x=s3cret"], {"K": "s3cret"}) == "+ K=**** tool --x=****"
    with pytest.raises(CommandError, match="refusing to pass a secret in argv"):
        runner.run(["tool", "--password", "s3cret"])


def test_a_source_date_epoch_reaches_both_builders(tmp_path):
    argv = backend("buildah", tmp_path).build_argv(image(timestamp=1700000000))
    assert argv[argv.index("--timestamp") + 1] == "1700000000"
    argv = backend("docker", tmp_path).build_argv(image(timestamp=1700000000), buildx=True)
    assert "SOURCE_DATE_EPOCH=1700000000" in argv
    assert "--timestamp" not in backend("buildah", tmp_path).build_argv(image())


def test_image_format_setting_reaches_buildah(tmp_path):
    argv = backend("buildah", tmp_path, {"MOLTBUILD_IMAGE_FORMAT": "docker"}).build_argv(image())
    assert argv[argv.index("--format") + 1] == "docker"


CACHE = ImageRef("reg:5000", "ns/moltbook-api/cache")


@pytest.mark.parametrize(
    ("cache", "no_cache", "use", "expected"),
    [
        (CACHE, False, True, ["--cache-from", str(CACHE), "--cache-to", str(CACHE)]),
        (CACHE, True, True, ["--no-cache"]),  # --no-cache: neither local nor registry layers
        (CACHE, False, False, []),  # the retry after a cache failure
        (None, False, True, []),  # no --push, or MOLTBUILD_REGISTRY_CACHE=0: the plan has no cache
    ],
)
def test_buildah_reads_and_writes_the_registry_cache_as_planned(tmp_path, cache, no_cache, use, expected):
    argv = backend("buildah", tmp_path).build_argv(image(cache=cache), no_cache=no_cache, cache=use)
    assert argv[-1 - len(expected) : -1] == expected and argv[-1] == "/ctx"
    assert "--cache-from" not in argv[: -1 - len(expected)] and "--cache-to" not in argv[: -1 - len(expected)]
    assert argv[argv.index("--authfile") + 1] == str(tmp_path / "auth.json")  # credentials: the authfile


def test_buildah_cache_takes_the_private_ca_and_a_loopback_target_over_plain_http(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    b = backend("buildah", tmp_path, {"MOLTBUILD_REGISTRY_CA": str(ca)})
    assert b.cache_argv(CACHE)[-2:] == ["--cert-dir", str(tmp_path / "certs")]
    hosts = backend("buildah", tmp_path)._plain_http_hosts(None, ["127.0.0.1:5000", "ghcr.io"])
    assert hosts == ["127.0.0.1:5000"]  # ghcr.io is never spoken to over plain HTTP


@pytest.mark.parametrize(
    ("cache", "no_cache", "use", "expected"),
    [
        (CACHE, False, True, ["--cache-from", f"{CACHE}:buildkit", "--build-arg", "BUILDKIT_INLINE_CACHE=1"]),
        (CACHE, True, True, ["--no-cache"]),
        (CACHE, False, False, []),  # the classic builder: no registry cache
        (None, False, True, []),
    ],
)
def test_docker_reads_the_inline_cache_from_the_cache_repository(tmp_path, cache, no_cache, use, expected):
    argv = backend("docker", tmp_path).build_argv(
        image(cache=cache), no_cache=no_cache, buildx=True, cache=use
    )
    assert argv[-1 - len(expected) : -1] == expected and argv[-1] == "/ctx"
    assert "--cache-from" not in argv[: -1 - len(expected)]


@pytest.mark.parametrize(
    ("buildx", "environ", "buildkit"),
    [
        (True, {}, True),
        (False, {"DOCKER_BUILDKIT": "1"}, True),
        (False, {}, False),
        (False, {"DOCKER_BUILDKIT": "0"}, False),
    ],
)
def test_docker_uses_buildkit_through_buildx_or_docker_buildkit(tmp_path, buildx, environ, buildkit):
    settings = load_settings(tmp_path, environ={}, tool_config={})
    b = make_backend("docker", Runner(environ=environ), settings, storage(), dry_run=True)
    b.__dict__["has_buildx"] = buildx  # what `docker buildx version` answered
    assert b.buildkit is buildkit


def test_buildah_applies_the_labels_in_one_step_quoted(tmp_path):
    """One LABEL step, not one per --label (each a layer-cache entry pushed and never reused);
    quotes, backslashes and `$` reach the image as written."""
    labels = {"org.opencontainers.image.source": 'https://e.org/a$b"q\\', "dev.x": "1"}
    argv = backend("buildah", tmp_path).build_argv(image(labels=labels))
    assert "--label" not in argv
    extra = Path(argv[argv.index("-f", argv.index("-f") + 1) + 1])
    assert (
        extra.read_text()
        == 'LABEL "org.opencontainers.image.source"="https://e.org/a\\$b\\"q\\\\" "dev.x"="1"\n'
    )
