import pytest

from moltbuild.errors import ConfigError
from moltbuild.tagging import GitState, plan_tags, sanitize_branch, source_url, validate_tag

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
