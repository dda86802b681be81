"""HEALTHCHECK read from the Dockerfile: an OCI image cannot carry it, the smoke check still runs it."""

from __future__ import annotations

import pytest

from moltbuild.errors import ConfigError
from moltbuild.smoke.probes import Healthcheck, dockerfile_healthcheck


def write(tmp_path, text: str):
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    return path


def test_exec_form_with_options_across_lines(tmp_path):
    df = write(
        tmp_path,
        "FROM python:3.12-slim\nHEALTHCHECK --interval=1m30s --timeout=500ms --start-period=2s \\\n"
        '  --retries=5 CMD ["python3", "-c", "print(1)"]\n',
    )
    assert dockerfile_healthcheck(df) == Healthcheck(("python3", "-c", "print(1)"), 90.0, 0.5, 2.0, 5)


def test_shell_form_runs_through_sh_with_docker_defaults(tmp_path):
    df = write(tmp_path, "FROM x\nHEALTHCHECK CMD wget -q -O /dev/null http://127.0.0.1/ || exit 1\n")
    assert dockerfile_healthcheck(df) == Healthcheck(
        ("/bin/sh", "-c", "wget -q -O /dev/null http://127.0.0.1/ || exit 1"), 30.0, 30.0, 0.0, 3
    )


def test_the_built_stage_counts_not_an_earlier_one(tmp_path):
    df = write(
        tmp_path,
        'FROM node AS deps\nHEALTHCHECK CMD ["deps"]\nFROM nginx AS web\nHEALTHCHECK CMD ["web"]\n'
        "FROM busybox AS debug\n",
    )
    assert dockerfile_healthcheck(df) is None  # the last stage has none
    assert dockerfile_healthcheck(df, target="web").argv == ("web",)
    assert dockerfile_healthcheck(write(tmp_path, "FROM x\nHEALTHCHECK NONE\n")) is None


def test_a_bad_duration_names_the_file_and_the_fix(tmp_path):
    df = write(tmp_path, "FROM x\nHEALTHCHECK --interval=soon CMD true\n")
    with pytest.raises(ConfigError, match=r"Dockerfile HEALTHCHECK: 'soon' is not a duration such as 30s"):
        dockerfile_healthcheck(df)
