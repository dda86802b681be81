"""The one Dockerfile model: stages, ARGs, FROM, EXPOSE, HEALTHCHECK and the target stage."""

import pytest

from moltbuild.dockerfile import Dockerfile
from moltbuild.errors import ConfigError

MULTI = """\
# syntax=docker/dockerfile:1
ARG BASE=python:3.12-slim
ARG TAG
FROM --platform=$BUILDPLATFORM ${BASE} AS build
ARG VERSION
RUN pip install \\
    flask
EXPOSE 9999
FROM build AS web
EXPOSE 8000/tcp 8001
HEALTHCHECK --interval=5s CMD ["wget", "-q", "http://127.0.0.1:8000/healthz"]
FROM busybox:1.36 AS debug
EXPOSE 7000
"""


def write(tmp_path, text):
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    return path


def test_the_target_stage_decides_what_is_exposed_and_checked(tmp_path):
    df = Dockerfile.read(write(tmp_path, MULTI))
    assert [s.name for s in df.stages] == ["build", "web", "debug"]
    web = df.stage("web")
    assert web.exposed == {8000, 8001, 9999}  # FROM build: what build EXPOSEs carries over
    assert web.healthcheck.startswith("--interval=5s CMD")
    assert df.stage(None).exposed == {7000} and df.stage(None).healthcheck is None  # the last stage
    assert df.stage("build").exposed == {9999} and df.stage("build").line == 4


def test_bases_substitute_global_args_and_skip_stages(tmp_path):
    path = write(tmp_path, MULTI)
    assert Dockerfile.read(path).bases() == ["python:3.12-slim", "busybox:1.36"]
    assert Dockerfile.read(path, {"BASE": "python:3.13"}).bases() == ["python:3.13", "busybox:1.36"]
    assert Dockerfile.read(path).declared_args == {"BASE", "TAG", "VERSION"}


def test_an_unknown_target_names_the_file_and_the_stages(tmp_path):
    df = Dockerfile.read(write(tmp_path, MULTI))
    with pytest.raises(ConfigError) as err:
        df.stage("prod", "target of [tool.moltbuild.images.api]")
    assert str(tmp_path / "Dockerfile") in err.value.message
    assert "'prod'" in err.value.message and "build, web, debug" in err.value.message


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("RUN echo hi\n", "no FROM instruction"),
        ("FROM\n", ":1: FROM names no image"),
        ("FROM Not_A/Valid:ref:x\n", "Dockerfile:1: FROM"),
    ],
)
def test_bad_dockerfiles_are_one_line_naming_the_file(tmp_path, text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Dockerfile.read(write(tmp_path, text)).bases()


def test_unreadable_and_non_utf8_dockerfiles_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the Dockerfile"):
        Dockerfile.read(tmp_path / "missing")
    path = tmp_path / "Dockerfile"
    path.write_bytes(b"FROM x\nLABEL a=\xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        Dockerfile.read(path)
