""".dockerignore read the way buildah and docker read it: moby's ignorefile.ReadAll (comments,
trimming, a cleaned pattern without its leading `/`) and patternmatcher (Go filepath.Match syntax
turned into a regexp per pattern; later lines win; a pattern matching a parent directory matches
everything below it). Not gitignore: `[!a]` is the class of `!` and `a`, a pattern is anchored at
the context root, `*` never crosses a `/`."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from moltbuild.errors import ConfigError

# The regexp specials escaped when a pattern becomes a regexp: moby's patternmatcher escapes all
# that filepath.Match does not know; buildah (containers/storage fileutils) only `.` and `$`, so for
# buildah `a|b` excludes every path starting with `a` or ending in `b` (measured with buildah 1.28).
ESCAPES = {"moby": frozenset(".+()|{}$"), "buildah": frozenset(".$")}
_BOM = "\ufeff"
# Go's regexp knows [[:alpha:]] & co. inside a class; Python's re does not: their ASCII sets
_POSIX = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_POSIX_RE = re.compile(r"\[:(" + "|".join(_POSIX) + r"):\]")


class Pattern(NamedTuple):
    text: str  # cleaned, without the `!`
    exclusion: bool  # a `!` line: re-includes what it matches
    match: Callable[[str], bool]


def go_clean(path: str) -> str:
    """Go's filepath.Clean on a slash path (posixpath.normpath keeps a leading `//`)."""
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    joined = "/".join(parts)
    return "/" + joined if rooted else joined or "."


def _char_end(p: str, i: int) -> int:
    """Index after one character of a class (Go's getEsc), -1 when the pattern is bad there."""
    if i >= len(p) or p[i] in "-]":
        return -1
    if p[i] == "\\":
        i += 1
        if i >= len(p):
            return -1
    i += 1
    return i if i < len(p) else -1


def _class_end(p: str, i: int) -> int:
    """Index after the `]` closing the class opened at p[i] (Go's matchChunk), -1 if bad."""
    i += 1
    if i < len(p) and p[i] == "^":
        i += 1
    count = 0
    while not (i < len(p) and p[i] == "]" and count):
        i = _char_end(p, i)
        if i >= 0 and p[i] == "-":
            i = _char_end(p, i + 1)
        if i < 0:
            return -1
        count += 1
    return i + 1


def _syntax_ok(p: str) -> bool:
    """What Go's filepath.Match(pattern, ".") accepts: no lone trailing `\\`, closed classes."""
    i = 0
    while i < len(p):
        if p[i] == "\\":
            if i + 1 >= len(p):
                return False
            i += 2
        elif p[i] == "[":
            i = _class_end(p, i)
            if i < 0:
                return False
        else:
            i += 1
    return True


def _regex(p: str, escape: frozenset[str]) -> tuple[str, str]:
    """patternmatcher's compile: (kind, regexp) with kind exact, prefix, suffix or regexp."""
    out, kind, i = "^", "exact", 0
    while i < len(p):
        piece, effect, i = _token(p, i, escape, first=i == 0)
        out += piece
        kind = ("prefix" if kind == "exact" else "regexp") if effect == "tail" else (effect or kind)
    return kind, out + r"\Z"


def _token(p: str, i: int, escape: frozenset[str], first: bool) -> tuple[str, str, int]:
    """The regexp of the pattern's token at `i`, what it does to the kind ('' nothing, 'regexp',
    'suffix', 'tail': a prefix match if all before was exact), and where the next token starts."""
    ch = p[i]
    i += 1
    if ch == "*" and p[i : i + 1] == "*":
        return _double_star(p, i + 1, first)
    if ch in "*?":
        return ("[^/]*" if ch == "*" else "[^/]"), "regexp", i
    if ch in escape:
        return "\\" + ch, "", i
    if ch == "\\":
        return ("\\" + p[i], "regexp", i + 1) if i < len(p) else ("\\\\", "", i)
    return ch, ("regexp" if ch in "[]" else ""), i


def _double_star(p: str, i: int, first: bool) -> tuple[str, str, int]:
    """`**` (and a `/` after it): any number of folders; a pattern starting with it is a suffix."""
    if p[i : i + 1] == "/":
        i += 1
    at_end = i >= len(p)
    effect = "suffix" if first else ("tail" if at_end else "regexp")
    return (".*" if at_end else "(.*/)?"), effect, i


def _posix_classes(regex: str) -> str:
    """Spell `[:name:]` inside a bracket class the way Python's re understands it."""
    out, i, open_at = [], 0, -1
    while i < len(regex):
        found = _POSIX_RE.match(regex, i) if open_at >= 0 else None
        if found:
            out.append(_POSIX[found.group(1)])
            i = found.end()
            continue
        ch = regex[i : i + 2] if regex[i] == "\\" else regex[i]
        if ch == "[" and open_at < 0:
            open_at = i
        elif ch == "]" and open_at >= 0 and i > open_at + 1 + (regex[open_at + 1] == "^"):
            open_at = -1
        out.append(ch)
        i += len(ch)
    return "".join(out)


def _matcher(text: str, escape: frozenset[str]) -> Callable[[str], bool]:
    kind, regex = _regex(text, escape)
    if escape != ESCAPES["moby"]:  # fileutils before patternmatcher: always the regexp
        kind = "regexp"
    if kind == "exact":
        return text.__eq__
    if kind == "prefix":
        start = text[:-2]
        return lambda path: path.startswith(start)
    if kind == "suffix":
        tail = text[2:]
        return lambda path: path.endswith(tail) or (tail[:1] == "/" and path == tail[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # `[[` is literal in Go's regexp too
        return re.compile(_posix_classes(regex)).search  # Go's MatchString: `a|b` finds `b` anywhere


def read_patterns(text: str) -> list[tuple[int, str]]:
    """ignorefile.ReadAll: (line number, pattern) for each line that is not blank or a comment."""
    found = []
    for number, line in enumerate(text.removeprefix(_BOM).split("\n"), start=1):
        line = line.removesuffix("\r")
        if line.startswith("#") or not line.strip():
            continue
        pattern = line.strip()
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = go_clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        found.append((number, ("!" if invert else "") + pattern))
    return found


class IgnoreRules:
    """The patterns of one .dockerignore, in order, as `flavor` (moby or buildah) reads them.
    `source` names the file in errors."""

    def __init__(self, text: str = "", source: str = ".dockerignore", flavor: str = "moby") -> None:
        escape = ESCAPES[flavor]
        self.patterns: list[Pattern] = []
        for number, raw in read_patterns(text):
            pattern = go_clean(raw)
            exclusion = pattern.startswith("!")
            if exclusion:
                pattern = pattern[1:]
            where = f"{source}:{number}: {raw!r}"
            if exclusion and not pattern:
                raise ConfigError(f"{where}: a lone `!` excludes nothing (docker refuses it too)")
            if not _syntax_ok(pattern):
                raise ConfigError(f"{where}: not a valid pattern (a trailing `\\` or an unclosed `[`)")
            try:
                self.patterns.append(Pattern(pattern, exclusion, _matcher(pattern, escape)))
            except re.error as exc:
                raise ConfigError(f"{where}: not a valid pattern for {flavor} ({exc})") from None
        self.exclusions = [p.text for p in self.patterns if p.exclusion]
        self._last_first = self.patterns[::-1]

    @classmethod
    def from_lines(cls, lines: Iterable[str], flavor: str = "moby") -> IgnoreRules:
        return cls("\n".join(lines), flavor=flavor)

    def hits(self, rel: str, inherited: Sequence[bool] | None = None) -> list[bool]:
        """Per pattern: does it match `rel` or (`inherited`, the parent's hits) a parent of it."""
        if inherited is None:
            parts = rel.split("/")
            inherited = [False] * len(self.patterns)
            for depth in range(1, len(parts)):
                inherited = self.hits("/".join(parts[:depth]), inherited)
        return [done or p.match(rel) for done, p in zip(inherited, self.patterns, strict=True)]

    def verdict(self, hits: Sequence[bool]) -> bool:
        """Excluded? The last pattern that matches decides (MatchesOrParentMatches)."""
        excluded = False
        for hit, pattern in zip(hits, self.patterns, strict=True):
            if hit:
                excluded = not pattern.exclusion
        return excluded

    def excluded(self, rel: str) -> bool:
        return self.verdict(self.hits(rel))

    def excluded_below(self, rel: str, inherited: Sequence[bool]) -> bool:
        """`verdict(hits(rel, inherited))` for a file: from the last pattern back, the first that
        matches decides, so most files cost one or two matches and no list (50k files per hash)."""
        for done, pattern in zip(reversed(inherited), self._last_first, strict=True):
            if done or pattern.match(rel):
                return not pattern.exclusion
        return False

    def enter_excluded_dir(self, rel_dir: str, superset: bool = False) -> bool:
        """Whether an excluded directory is walked all the same. buildah and docker's classic
        builder enter it only for an exception naming a path below it (`!dir/x*`); BuildKit also
        for one starting with a wildcard (`!**/x`): `superset` enters for both."""
        below = rel_dir + "/"
        for text in self.exclusions:
            if (text + "/").startswith(below):
                return True
            literal = re.split(r"[*?\[\\]", text, maxsplit=1)[0]
            if superset and (below.startswith(literal) or literal.startswith(below)):
                return True
        return False
