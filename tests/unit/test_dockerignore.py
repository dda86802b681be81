"""The .dockerignore matcher against moby's rules: (patterns, path, excluded?)."""

import pytest

from moltbuild.errors import ConfigError
from moltbuild.plan.ignore import IgnoreRules, go_clean

CASES = [
    # `*` and `?` stay within one path component; a parent that matches excludes its contents
    (["*.py"], "a.py", True),
    (["*.py"], "d/a.py", False),
    (["*"], "d/a.py", True),
    (["?.txt"], "a.txt", True),
    (["?.txt"], "ab.txt", False),
    (["a?c"], "a/c", False),
    # character classes: ranges, `^` negates; `!` is an ordinary member (Go regexp, not gitignore)
    (["[a-c]*"], "b1", True),
    (["[a-c]*"], "d1", False),
    (["pkg/[!a]*.py"], "pkg/app.py", True),
    (["pkg/[!a]*.py"], "pkg/__init__.py", False),
    (["pkg/[!a]*.py"], "pkg/!x.py", True),
    (["pkg/[^a]*.py"], "pkg/app.py", False),
    (["pkg/[^a]*.py"], "pkg/__main__.py", True),
    (["[\\]]x"], "]x", True),
    # `**` crosses components, also none; at the start a suffix, at the end a prefix
    (["**/*.py"], "a.py", True),
    (["**/*.py"], "d/e/a.py", True),
    (["**/foo"], "foo", True),
    (["**/foo"], "a/b/foo", True),
    (["**/foo"], "afoo", False),
    (["a/**/b"], "a/b", True),
    (["a/**/b"], "a/x/y/b", True),
    (["a/**/b"], "a/xb", False),
    (["foo/**"], "foo/x/y", True),
    (["foo/**"], "foo", False),
    (["**"], "any/thing", True),
    # `!` exceptions re-include; the last matching line wins
    (["docs", "!docs/README.md"], "docs/README.md", False),
    (["docs", "!docs/README.md"], "docs/guide.md", True),
    (["*.txt", "!a.txt"], "a.txt", False),
    (["!a.txt", "*.txt"], "a.txt", True),
    (["dir", "!dir/sub"], "dir/sub/f", False),
    (["dir", "!dir/sub", "dir/sub/x*"], "dir/sub/xy", True),
    (["dir/*", "!dir/keep", "dir/keep/tmp"], "dir/keep/tmp/f", True),
    # trailing slash and leading slash stripped, patterns cleaned, anchored at the root
    (["build/"], "build/out.bin", True),
    (["build/"], "builder.py", False),
    (["/build"], "build/x", True),
    (["/build"], "src/build/x", False),
    (["a/../b"], "b/x", True),
    (["./c//d/"], "c/d", True),
    (["!./keep", "*"], "keep", True),
    (["*", "!/keep/"], "keep/f", False),
    # comments only at the very start of a line; spaces trimmed; regexp specials literal
    (["# x"], "# x", False),
    ([" # x"], "# x", True),
    (["  spaced.txt  "], "spaced.txt", True),
    (["a.b"], "axb", False),
    (["x+(y)|{z}$"], "x+(y)|{z}$", True),
    (["a\\*b"], "a*b", True),
    (["a\\*b"], "axb", False),
    # a path is never matched by a gitignore-style unanchored name
    (["node_modules"], "app/node_modules/x.js", False),
]


@pytest.mark.parametrize(("patterns", "path", "excluded"), CASES)
def test_moby_matching(patterns, path, excluded):
    assert IgnoreRules.from_lines(patterns).excluded(path) is excluded


def test_a_bom_and_crlf_lines_are_read_like_docker():
    rules = IgnoreRules("\ufeff*.log\r\n!keep.log\r\n")
    assert rules.excluded("a.log") and not rules.excluded("keep.log")


@pytest.mark.parametrize(
    ("line", "why"),
    [("trailing\\", "trailing `\\`"), ("[a", "unclosed `[`"), ("[]", "unclosed `[`"), ("!", "lone `!`")],
)
def test_a_pattern_docker_refuses_is_refused_naming_the_file_and_line(line, why):
    with pytest.raises(ConfigError) as err:
        IgnoreRules(f"ok\n{line}\n", source="ctx/.dockerignore")
    assert err.value.message.startswith("ctx/.dockerignore:2: ") and why in err.value.message
    assert "\n" not in err.value.message


@pytest.mark.parametrize(
    ("path", "clean"), [("a//b/./c/", "a/b/c"), ("/../x", "/x"), ("../a/..", ".."), ("", "."), ("//a", "/a")]
)
def test_go_clean(path, clean):
    assert go_clean(path) == clean


def test_excluded_directories_are_entered_only_for_an_exception_below_them():
    rules = IgnoreRules.from_lines(["logs", "docs", "!docs/README.md", "!**/keep.txt"])
    assert rules.enter_excluded_dir("docs") and not rules.enter_excluded_dir("logs")
    assert rules.enter_excluded_dir("logs", superset=True)  # BuildKit follows `!**/...`


FLAVOURS = [
    # (patterns, path, moby excludes?, buildah 1.28 excludes?): buildah's older fileutils leaves
    # `+()|{}` as regexp operators and always matches by regexp, measured in the integration test
    (["x+y.txt"], "x+y.txt", True, False),
    (["x+y.txt"], "xxy.txt", False, True),
    (["a|b"], "zzb", False, True),
    (["a|b"], "app/main.py", False, True),
    (["q(1)"], "q1", False, True),
    (["{z}"], "{z}", True, True),
    (["src/**", "!src/pkg/*.py"], "src/pkg/mod.py", False, False),
    (["src/**"], "src/a/b", True, True),
    (["**/keep.txt"], "logs/keep.txt", True, True),
    (["[[:alpha:]]9"], "Z9", True, True),
    (["[[:alpha:]]9"], "19", False, False),
]


@pytest.mark.parametrize(("patterns", "path", "moby", "buildah"), FLAVOURS)
def test_moby_and_buildah_readings(patterns, path, moby, buildah):
    assert IgnoreRules.from_lines(patterns).excluded(path) is moby
    assert IgnoreRules.from_lines(patterns, flavor="buildah").excluded(path) is buildah
