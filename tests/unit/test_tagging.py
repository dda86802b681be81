import re

import pytest

from moltbuild.errors import ConfigError
from moltbuild.plan.tags import (
    DEFAULT_TEMPLATES,
    GitState,
    check_templates,
    latest_notes,
    plan_tags,
    sanitize_branch,
    source_url,
    validate_tag,
)

SHA = "0123456789abcdef0123456789abcdef01234567"


def state(branch="main", dirty=False, default="main"):
    return GitState(sha=SHA, branch=branch, default_branch=default, dirty=dirty, source="https://x/y")


@pytest.mark.parametrize(
    "git, extra, expected",
    [
        (state(), [], ["sha-0123456", "main", "latest"]),
        (state(dirty=True), [], ["sha-0123456-dirty", "main"]),
        (state(branch="feature/Login_v2"), [], ["sha-0123456", "feature-Login_v2"]),
        (state(branch=None), ["v1.2.3"], ["sha-0123456", "v1.2.3"]),
        (state(), ["latest", "rc1"], ["sha-0123456", "main", "latest", "rc1"]),
        (state(branch="trunk", default="trunk"), [], ["sha-0123456", "trunk", "latest"]),
    ],
)
def test_tag_plan(git, extra, expected):
    assert plan_tags(git, extra) == expected


@pytest.mark.parametrize("bad", ["", "-lead", ".lead", "has space", "a" * 129, "x:y", "ü"])
def test_invalid_tags_are_refused_with_the_flag_named(bad):
    with pytest.raises(ConfigError, match=r"--tag .* is not a valid image tag"):
        validate_tag(bad)


@pytest.mark.parametrize(
    "branch, tag",
    [
        ("main", "main"),
        ("feat/a b", "feat-a-b"),
        ("--x--", "x"),
        ("dependabot/npm/x@1.2", "dependabot-npm-x-1.2"),
    ],
)
def test_sanitize_branch(branch, tag):
    assert sanitize_branch(branch) == tag


@pytest.mark.parametrize(
    "url, clean",
    [
        ("https://user:ghp_secret@github.com/org/repo.git", "https://github.com/org/repo"),
        ("git@github.com:org/repo.git", "https://github.com/org/repo"),
        ("ssh://git@github.com/org/repo", "https://github.com/org/repo"),
        ("ssh://git@github.com:22/org/repo.git", "https://github.com/org/repo"),
        ("https://git.example.org:8443/team/app.git/", "https://git.example.org:8443/team/app"),
        ("git.example.org:team/app.git", "https://git.example.org/team/app"),
        # no web address: the image names the default source instead
        ("/srv/git/moltbook.git", None),
        ("../moltbook", None),
        ("file:///srv/git/moltbook.git", None),
        ("~/src/moltbook", None),
        ("https://github.com/", None),
    ],
)
def test_source_url_never_keeps_credentials_or_a_local_path(url, clean):
    assert source_url(url) == clean


def state(**kw) -> GitState:
    base = dict(
        sha="abcdef0" + "1" * 33,
        branch="feature/Login",
        default_branch="main",
        dirty=False,
        source="",
        commit_time=1700000000,
    )
    return GitState(**{**base, **kw})


def test_default_templates_give_the_familiar_plan():
    assert plan_tags(state(branch="main")) == ["sha-abcdef0", "main", "latest"]
    assert plan_tags(state(dirty=True)) == ["sha-abcdef0-dirty", "feature-Login"]
    assert plan_tags(state(branch=None)) == ["sha-abcdef0"]  # detached, CI silent: no branch tag


def test_templates_as_teams_already_tag():
    upstream = check_templates(["{branch}-{sha7}", "{sha7}"])  # CI pushed main-<sha7>, k8s pinned <sha7>
    assert plan_tags(state(branch="main"), templates=upstream) == ["main-abcdef0", "abcdef0", "latest"]
    dated = check_templates(["{sha7}", "{date}-{sha}"])
    assert plan_tags(state(dirty=True), templates=dated) == [
        "abcdef0-dirty",
        f"20231114-{'abcdef0' + '1' * 33}-dirty",
    ]


@pytest.mark.parametrize(
    "templates, fragment",
    [
        (["{branch}"], "first template '{branch}' is the revision tag"),
        (["{sha7}", "{user}"], "uses {user}"),
        ("sha-{sha7}", "must be a list"),
        ([], "must be a list"),
    ],
)
def test_bad_templates_name_the_setting(templates, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        check_templates(templates)


def test_a_template_that_renders_an_invalid_tag_names_the_template():
    with pytest.raises(ConfigError, match=r"template '\.{sha7}' renders '\.abcdef0'"):
        plan_tags(state(), templates=check_templates([".{sha7}"]))


def test_semver_tags_from_a_version_tag_on_head():
    tagged = state(branch="main", version_tags=("v1.4.2", "nightly"))
    assert plan_tags(tagged, semver=True) == ["sha-abcdef0", "main", "latest", "1.4.2", "1.4", "1"]
    assert plan_tags(tagged) == ["sha-abcdef0", "main", "latest"]  # off unless asked
    assert "1.4.2" not in plan_tags(state(dirty=True, version_tags=("v1.4.2",)), semver=True)


def test_a_literal_latest_template_follows_the_only_a_clean_default_branch_rule():
    templates = check_templates(["{sha7}", "latest"])
    assert plan_tags(state(branch="main"), templates=templates) == ["abcdef0", "latest"]
    assert latest_notes(state(branch="main"), templates) == ()
    assert plan_tags(state(branch="main", dirty=True), templates=templates) == ["abcdef0-dirty"]
    assert plan_tags(state(branch="feature/Login"), templates=templates) == ["abcdef0"]
    (dirty,) = latest_notes(state(branch="main", dirty=True), templates)
    assert "renders 'latest': not pushed, the tree has changes" in dirty
    (branch,) = latest_notes(state(branch="feature/Login"), templates)
    assert "branch feature/Login is not the default main" in branch
    assert latest_notes(state(dirty=True), DEFAULT_TEMPLATES) == ()  # nothing renders it: nothing to say
