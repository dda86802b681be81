import pytest

from moltbuild.errors import ConfigError
from moltbuild.refs import ImageRef

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "text, host, repository, tag, digest",
    [
        ("python:3.12-slim", "docker.io", "library/python", "3.12-slim", None),
        ("busybox", "docker.io", "library/busybox", None, None),
        ("bitnami/redis:7", "docker.io", "bitnami/redis", "7", None),
        (
            "ghcr.io/ardenone/moltbook-api:sha-abc1234",
            "ghcr.io",
            "ardenone/moltbook-api",
            "sha-abc1234",
            None,
        ),
        ("localhost:5000/img", "localhost:5000", "img", None, None),
        ("127.0.0.1:5000/a/b@" + DIGEST, "127.0.0.1:5000", "a/b", None, DIGEST),
        ("reg.example/a:1@" + DIGEST, "reg.example", "a", "1", DIGEST),
        ("[::1]:5000/ns/app:0012345", "[::1]:5000", "ns/app", "0012345", None),
    ],
)
def test_parse_follows_docker_normalisation(text, host, repository, tag, digest):
    ref = ImageRef.parse(text, "test")
    assert (ref.host, ref.repository, ref.tag, ref.digest) == (host, repository, tag, digest)


@pytest.mark.parametrize(
    "text, rendered",
    [
        ("python:3.12-slim", "docker.io/library/python:3.12-slim"),
        ("busybox", "docker.io/library/busybox:latest"),
        ("ghcr.io/org/img:1", "ghcr.io/org/img:1"),
        ("img@" + DIGEST, "docker.io/library/img@" + DIGEST),
    ],
)
def test_render_round_trips(text, rendered):
    ref = ImageRef.parse(text, "test", default_tag="latest")
    assert str(ref) == rendered and ImageRef.parse(rendered, "again") == ref


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("https://ghcr.io/a/b", "drop the scheme"),
        ("ghcr.io/Ardenone/app", "must be lowercase"),
        ("ghcr.io/a b", "contains spaces"),
        ("ghcr.io/a/app:-bad", "tag '-bad'"),
        ("ghcr.io/a/app@sha256:12", "digest must look like"),
        ("bad_host!:5000/a", r"registry host .* is not HOST\[:PORT\]"),
        ("", "empty"),
    ],
)
def test_grammar_errors_name_the_origin(text, fragment):
    with pytest.raises(ConfigError, match=r"^MOLTBUILD_REGISTRY .*" + fragment.replace("(", r"\(")):
        ImageRef.parse(text, "MOLTBUILD_REGISTRY")


def test_repository_of_refuses_tags_and_helpers_keep_the_repository():
    with pytest.raises(ConfigError, match="without a tag or digest"):
        ImageRef.repository_of("ghcr.io/a/app:1", "[tool.moltbuild.images.api] repository")
    repo = ImageRef.repository_of("ghcr.io/a/app", "x")
    assert str(repo.with_tag("v1")) == "ghcr.io/a/app:v1" and repo.name == "ghcr.io/a/app"
    assert repo.with_tag("v1").with_digest(DIGEST).reference == DIGEST
    assert repo.with_tag("v1").reference == "v1"
    mirrored = ImageRef.parse("python:3.12", "x").moved_to("m.example:5000/hub")
    assert str(mirrored) == "m.example:5000/hub/library/python:3.12"


@pytest.mark.parametrize(
    "text", ["user:s3cr3t-pw@127.0.0.1:5000/x", "u:p@ghcr.io/a/b:1", "tok@reg.example/a"]
)
def test_credentials_in_a_reference_are_refused_and_never_echoed(text):
    with pytest.raises(ConfigError) as err:
        ImageRef.parse(text, "MOLTBUILD_REGISTRY")
    assert "holds credentials" in err.value.message and "REGISTRY_PASSWORD" in err.value.message
    assert text.split("@")[0] not in err.value.message
    assert ImageRef.parse("python@sha256:" + "a" * 64, "x").digest  # a digest is not a credential
