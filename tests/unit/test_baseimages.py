import pytest

from moltbuild.errors import ConfigError
from moltbuild.plan.bases import dockerfile_bases, mirrored, registries_conf


def test_only_docker_hub_goes_through_the_mirror():
    assert mirrored("python:3.12-slim", "m.example:5000/hub") == "m.example:5000/hub/library/python:3.12-slim"
    assert mirrored("ghcr.io/org/img:1", "m.example:5000/hub") == "ghcr.io/org/img:1"
    assert mirrored("python:3.12-slim", None) == "docker.io/library/python:3.12-slim"


@pytest.mark.parametrize("bad", ["http://m/x", "m x/y", ""])
def test_bad_mirror_names_the_setting(bad):
    with pytest.raises(ConfigError, match="MOLTBUILD_BASE_MIRROR"):
        mirrored("python:3", bad or " ")


def test_dockerfile_bases_skip_stages_and_scratch_and_resolve_args(tmp_path):
    df = tmp_path / "Dockerfile"
    df.write_text(
        "ARG BASE=node:20\nFROM ${BASE} AS build\nRUN x\nFROM build AS test\n"
        "FROM --platform=$BUILDPLATFORM busybox:1.36\nFROM scratch\nCOPY --from=build / /\n"
    )
    assert dockerfile_bases(df) == ["node:20", "busybox:1.36"]
    assert dockerfile_bases(df, {"BASE": "node:22"}) == ["node:22", "busybox:1.36"]


def test_registries_conf_rewrites_docker_hub_to_the_mirror():
    conf = registries_conf("127.0.0.1:5000/mirror", ["127.0.0.1:5000"])
    assert 'prefix = "docker.io"\nlocation = "127.0.0.1:5000/mirror"\ninsecure = true' in conf
    assert 'unqualified-search-registries = ["docker.io"]' in conf
    assert "prefix" not in registries_conf(None, [])
