"""The registry layer cache: when the plan uses it, and what buildah's output says about it."""

from __future__ import annotations

from pathlib import Path

import pytest

from moltbuild.backends import layercache
from moltbuild.plan.planner import registry_cache
from moltbuild.plan.request import BuildRequest
from moltbuild.settings import load_settings

# What buildah 1.28.2 printed here when the registry refused the cache repository (403).
REFUSED = (
    "--> Pushing cache 127.0.0.1:5078/t/app/cache:e6e4499a\n"
    'Error: failed pushing cache to {{{"127.0.0.1:5078" "t/app/cache"} "e6e4499a"}}: trying to reuse '
    "blob sha256:b00981ed at destination: failed to read from destination repository t/app/cache: "
    "403 (Forbidden)\n"
)


@pytest.mark.parametrize(
    ("push", "no_cache", "env", "on", "says"),
    [
        (True, False, {}, True, "REPO/cache"),
        (False, False, {}, False, "used with --push"),
        (True, True, {}, False, "--no-cache"),
        (True, False, {"MOLTBUILD_REGISTRY_CACHE": "0"}, False, "MOLTBUILD_REGISTRY_CACHE=0 from env"),
        (True, False, {"MOLTBUILD_REGISTRY_CACHE": "off"}, False, "MOLTBUILD_REGISTRY_CACHE=off"),
    ],
)
def test_the_registry_cache_is_on_when_pushing_unless_turned_off(tmp_path, push, no_cache, env, on, says):
    settings = load_settings(tmp_path, environ=env, tool_config={})
    used, why = registry_cache(BuildRequest(push=push, no_cache=no_cache), settings)
    assert used is on and says in why


def test_a_bad_cache_setting_names_the_key(tmp_path):
    from moltbuild.errors import ConfigError

    with pytest.raises(ConfigError, match="MOLTBUILD_REGISTRY_CACHE='maybe'"):
        settings = load_settings(tmp_path, environ={"MOLTBUILD_REGISTRY_CACHE": "maybe"}, tool_config={})
        registry_cache(BuildRequest(push=True), settings)


def test_a_refused_cache_push_is_recognised_and_summed_up_in_one_line():
    assert layercache.failure(REFUSED) == "push of cache layers failed (403 (Forbidden))"
    pull = 'Error: failed while pulling cache from "reg/app/cache": unexpected EOF\n'
    assert layercache.failure(pull) == "pull of cache layers failed (unexpected EOF)"


@pytest.mark.parametrize(
    "output",
    [
        'Error: building at STEP "RUN false": exit status 1\n',  # the Dockerfile failed: a real error
        "--> Pushing cache reg/app/cache:abc\nError: no space left on device\n",
    ],
)
def test_other_build_failures_are_not_cache_failures(output):
    assert layercache.failure(output) == ""


def test_the_outcome_counts_layers_pulled_and_pushed(tmp_path: Path):
    log = tmp_path / "api.log"
    log.write_text(
        "STEP 2/4: COPY deps.txt /deps.txt\n--> Cache pulled from remote reg/app/cache:e6e4\n"
        "--> Using cache fa1b64bcb413\nSTEP 3/4: RUN pip install\n--> Cache pulled from remote "
        "reg/app/cache:31ee\nSTEP 4/4: COPY app.py /app.py\n--> Pushing cache reg/app/cache:6b0f\n"
    )
    assert layercache.outcome(log, "reg/app/cache") == "2 layer(s) pulled from reg/app/cache, 1 pushed"


def test_a_build_cut_for_moving_no_byte_is_a_cache_failure():
    from moltbuild.system.processes import IDLE_CUT

    tail = f"--> Pushing cache reg/app/cache:abc\nno progress for 600s {IDLE_CUT}; is the registry answering?"
    assert layercache.failure(tail).startswith("no progress while the registry was in use")


def test_pyproject_can_turn_the_registry_cache_off(tmp_path):
    settings = load_settings(tmp_path, environ={}, tool_config={"registry_cache": False})
    used, why = registry_cache(BuildRequest(push=True), settings)
    assert (
        used is False
        and "MOLTBUILD_REGISTRY_CACHE=False from pyproject.toml [tool.moltbuild] registry_cache" in why
    )
