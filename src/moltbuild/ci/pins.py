"""`invoke k8s.commit-pins`: commit the pinned kustomization and push it, rebasing on a
non-fast-forward (another run pinned first) a bounded number of times."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from pathlib import Path

from moltbuild.errors import CommandError, ConfigError, MoltbuildError
from moltbuild.system.processes import Runner

BOT_NAME = "github-actions[bot]"
BOT_EMAIL = "41898282+github-actions[bot]@users.noreply.github.com"
REJECTED = re.compile(r"non-fast-forward|fetch first|\[rejected\]|updates were rejected", re.I)


def _branch(git, environ: Mapping[str, str]) -> str:
    current = git("symbolic-ref", "--quiet", "--short", "HEAD", check=False).stdout.strip()
    branch = current or environ.get("GITHUB_HEAD_REF") or environ.get("GITHUB_REF_NAME") or ""
    if not branch:
        raise ConfigError("detached HEAD and no GITHUB_REF_NAME: pass --branch to name the branch to push to")
    return branch


def commit_and_push(
    root: Path,
    paths: list[Path],
    *,
    runner: Runner,
    environ: Mapping[str, str],
    message: str,
    remote: str = "origin",
    branch: str | None = None,
    attempts: int = 3,
) -> bool:
    """Commit `paths` (if they changed) as the bot and push; True when a commit was pushed."""
    if attempts < 1:
        raise ConfigError(f"attempts={attempts}: at least one push must be tried (--attempts 1 or more)")
    identity = ["-c", f"user.name={environ.get('GIT_AUTHOR_NAME') or BOT_NAME}"]
    identity += ["-c", f"user.email={environ.get('GIT_AUTHOR_EMAIL') or BOT_EMAIL}"]

    def git(*args: str, check: bool = True, mutates: bool = True):
        return runner.run(
            ["git", "-C", str(root), *identity, *args],
            check=check,
            timeout=120,
            mutates=mutates,
            what=f"git {args[0]}",
        )

    branch = branch or _branch(lambda *a, **k: git(*a, mutates=False, **k), environ)
    rel = [_inside(root, p) for p in paths]
    if not git("status", "--porcelain", "--", *rel, mutates=False).stdout.strip():
        runner.say(f"{', '.join(rel)}: nothing to commit")
        return False
    git("add", "--", *rel)
    git("commit", "-q", "-m", message, "--", *rel)
    for attempt in range(1, attempts + 1):
        try:
            git("push", remote, f"HEAD:refs/heads/{branch}")
            runner.say(f"pushed {message!r} to {remote}/{branch}")
            return True
        except CommandError as exc:
            if attempt == attempts or not REJECTED.search(exc.tail):
                raise MoltbuildError(
                    f"git push to {remote}/{branch} failed after {attempt} attempt(s): {_reason(exc)}"
                ) from None
        runner.say(f"{remote}/{branch} moved on; rebasing and trying again ({attempt + 1}/{attempts})")
        try:
            git("pull", "--rebase", "-q", remote, branch)
        except CommandError as exc:
            conflicted = git(
                "diff", "--name-only", "--diff-filter=U", check=False, mutates=False
            ).stdout.split()
            git("rebase", "--abort", check=False)
            what = f"conflict in {', '.join(conflicted)}" if conflicted else _conflict(exc)
            raise MoltbuildError(
                f"rebasing the pin onto {remote}/{branch} failed ({what}); "
                "someone changed the same lines: pin again on the new head"
            ) from None
        time.sleep(attempt)  # runs that pin at the same time spread out
    return True


def _inside(root: Path, path: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        raise ConfigError(
            f"{path} is outside the repository {root}; commit-pins commits a file of this checkout"
        ) from None


def _conflict(exc: CommandError) -> str:
    """git's CONFLICT line (it names the file), else its own error line; always one line."""
    lines = [line.strip() for line in exc.tail.splitlines() if line.strip()]
    found = next((line for line in lines if line.startswith("CONFLICT")), None)
    return (found or _reason(exc))[:300]


def _reason(exc: CommandError) -> str:
    """git's own `fatal:`/`error:` line, else its last line."""
    lines = [line.strip() for line in exc.tail.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("fatal:", "error:", "remote: error")):
            return line
    return lines[-1] if lines else exc.message
