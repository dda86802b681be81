"""`invoke k8s.commit-pins`: push the pinned kustomization, and nothing else.

The pin commit is made on top of the REMOTE branch tip, in a temporary index: the checkout's own
commits, its index and its work tree are never part of it (a dirty file or an unpushed commit
stays local). Another run's pin that landed meanwhile is merged line by line (a pin of another
image survives; the same lines changed is an error). A tip that moves during the push is fetched
again, a bounded number of times. A protected branch (or `--pull-request`) gets the pin on a branch
`moltbuild/pins-<sha7>` and a pull request through GitHub's REST API. A run on a tag pins the
default branch when the tag is its tip, else nothing: never a branch named after the tag."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from moltbuild.errors import CommandError, ConfigError, MoltbuildError
from moltbuild.system.processes import Runner
from moltbuild.system.retry import RetryPolicy

BOT_NAME = "github-actions[bot]"
BOT_EMAIL = "41898282+github-actions[bot]@users.noreply.github.com"
REJECTED = re.compile(r"non-fast-forward|fetch first|\[rejected\]|updates were rejected", re.I)
# GitHub (GH006 protected branch, GH013 repository rules), GitLab, Gitea, a server hook.
PROTECTED = re.compile(
    r"protected branch|GH006|GH013|pre-receive hook declined|protected ref|"
    r"must be made through a pull request|repository rule violations",
    re.I,
)
# A tip that moved during the push: pin again on the new one, 1 2 4 ... s apart (runs that pin at
# the same time spread out); the number of tries comes from --attempts.
PIN_RETRY = RetryPolicy(attempts=3, base=1.0, cap=10.0, max_wait=120.0)
OpenPull = Callable[[str, str, str, str], str]  # (head, base, title, body) -> the pull request's URL


def _inside(root: Path, path: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        raise ConfigError(
            f"{path} is outside the repository {root}; commit-pins commits a file of this checkout"
        ) from None


def _reason(exc: CommandError) -> str:
    """git's own `fatal:`/`error:` line, else its last line."""
    lines = [line.strip() for line in exc.tail.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("fatal:", "error:", "remote: error")):
            return line
    return lines[-1] if lines else exc.message


def _refusal(exc: CommandError) -> str:
    """Why a protected remote refused: its own error line, else git's `[remote rejected]` line."""
    lines = [line.strip() for line in exc.tail.splitlines() if line.strip()]
    found = next((line for line in lines if line.startswith("remote: error")), None)
    found = found or next((line for line in lines if "remote rejected" in line), None)
    return found or _reason(exc)


@dataclass
class Pins:
    """One `commit-pins`: the checkout, what to commit, where to, and how."""

    root: Path
    rel: list[str]
    runner: Runner
    environ: Mapping[str, str]
    message: str
    remote: str = "origin"
    retry: RetryPolicy = PIN_RETRY
    identity: list[str] = field(default_factory=list)

    def git(self, *args: str, check: bool = True, mutates: bool = False, env=None):
        return self.runner.run(
            ["git", "-C", str(self.root), *self.identity, *args],
            check=check,
            timeout=120,
            mutates=mutates,
            env=env,
            what=f"git {args[0]}",
        )

    # -- where the pin goes ------------------------------------------------------------------

    def target(self, branch: str | None) -> str | None:
        """The branch to pin on; None (said) when the run is on a tag that is not the default
        branch's tip."""
        if branch:
            return branch
        env = self.environ
        on_tag = env.get("GITHUB_REF_TYPE") == "tag" or env.get("GITHUB_REF", "").startswith("refs/tags/")
        name = self._checked_out(on_tag)
        heads = self.remote_refs(name)
        is_branch = re.search(rf"\trefs/heads/{re.escape(name)}$", heads, re.M)
        is_tag = re.search(rf"\trefs/tags/{re.escape(name)}$", heads, re.M)
        if name and not on_tag and (is_branch or not is_tag):
            return name  # a branch (a new one starts from the remote's HEAD)
        return self._default_for_tag(env.get("GITHUB_REF_NAME") or name, heads)

    def _checked_out(self, on_tag: bool) -> str:
        """The branch checked out, else the one the CI run names ('' for a run on a tag)."""
        name = self.git("symbolic-ref", "--quiet", "--short", "HEAD", check=False).stdout.strip()
        if name or on_tag:
            return name
        name = self.environ.get("GITHUB_HEAD_REF") or self.environ.get("GITHUB_REF_NAME") or ""
        if not name:
            raise ConfigError(
                "detached HEAD and no GITHUB_REF_NAME: pass --branch to name the branch to push to"
            )
        return name

    def remote_refs(self, name: str) -> str:
        """`git ls-remote --symref` of the remote's HEAD and of `name` as a branch and as a tag."""
        refs = [f"refs/heads/{name}", f"refs/tags/{name}"] if name else []
        try:
            return self.git("ls-remote", "--symref", self.remote, "HEAD", *refs).stdout
        except CommandError as exc:
            raise MoltbuildError(f"reading the branches of {self.remote} failed: {_reason(exc)}") from None

    def _default_for_tag(self, tag: str, heads: str) -> str | None:
        found = re.search(r"^ref: refs/heads/(\S+)\tHEAD$", heads, re.M)
        tip = re.search(r"^([0-9a-f]{40})\tHEAD$", heads, re.M)
        default = found.group(1) if found else None
        head = self.git("rev-parse", "HEAD").stdout.strip()
        if default and tip and tip.group(1) == head:
            self.runner.say(f"a run on tag {tag}: pinning on {self.remote}/{default}, whose tip it is")
            return default
        where = f"the tip of {self.remote}/{default}" if default else f"on a branch of {self.remote}"
        self.runner.say(
            f"a run on tag {tag}, whose commit is not {where}: not pinning (pins go to the default "
            "branch or nowhere, never to a branch named after a tag)"
        )
        return None

    # -- the commit --------------------------------------------------------------------------

    def tip(self, branch: str) -> str:
        """The remote branch's tip, fetched; a branch the remote lacks starts from its HEAD."""
        ref = f"refs/heads/{branch}"
        if not self.git("ls-remote", self.remote, ref, check=False).stdout.strip():
            self.runner.say(f"{self.remote} has no branch {branch}: starting it from {self.remote}'s HEAD")
            ref = "HEAD"
        try:
            self.git("fetch", "-q", "--no-tags", self.remote, ref)
        except CommandError as exc:
            raise MoltbuildError(f"fetching {self.remote}/{branch} failed: {_reason(exc)}") from None
        return self.git("rev-parse", "FETCH_HEAD^{commit}").stdout.strip()

    def commit_on(self, tip: str, branch: str) -> str | None:
        """A commit whose parent is `tip` and whose tree is the tip's with our pins merged in;
        None when the tip already has them."""
        with tempfile.TemporaryDirectory(prefix="moltbuild-pins-") as tmp:
            index = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            self.git("read-tree", tip, env=index)
            for rel in self.rel:
                blob = self._merged_blob(rel, tip, branch, Path(tmp))
                mode = self.git("ls-tree", tip, "--", rel).stdout.split(" ")[0] or "100644"
                self.git("update-index", "--add", "--cacheinfo", f"{mode},{blob},{rel}", env=index)
            tree = self.git("write-tree", env=index).stdout.strip()
        if tree == self.git("rev-parse", f"{tip}^{{tree}}").stdout.strip():
            return None
        return self.git("commit-tree", tree, "-p", tip, "-m", self.message).stdout.strip()

    def _version(self, commit: str, rel: str, tmp: Path, name: str) -> Path | None:
        """The file as `commit` has it, byte for byte, or None when it has none."""
        index = {"GIT_INDEX_FILE": str(tmp / f"{name}.index")}
        if not self.git("ls-tree", commit, "--", rel).stdout.strip():
            return None
        self.git("read-tree", commit, env=index)
        self.git("checkout-index", f"--prefix={tmp}/{name}/", "--", rel, env=index)
        return tmp / name / rel

    def _merged_blob(self, rel: str, tip: str, branch: str, tmp: Path) -> str:
        """Our file (the work tree's), with what the tip changed since our HEAD merged in."""
        ours = tmp / "ours" / rel
        ours.parent.mkdir(parents=True, exist_ok=True)
        ours.write_bytes((self.root / rel).read_bytes())
        theirs = self._version(tip, rel, tmp, "theirs")
        base = self._version("HEAD", rel, tmp, "base")
        if theirs and theirs.read_bytes() not in (ours.read_bytes(), base.read_bytes() if base else None):
            if base is None:
                base = tmp / "empty"
                base.write_bytes(b"")
            merged = self.git(
                "merge-file",
                "-L",
                "pin",
                "-L",
                "HEAD",
                "-L",
                branch,
                str(ours),
                str(base),
                str(theirs),
                check=False,
            )
            if merged.returncode != 0:
                raise MoltbuildError(
                    f"pinning on {self.remote}/{branch} failed (conflict in {rel}): someone changed the "
                    "same lines: pin again on the new head"
                )
        return self.git("hash-object", "-w", "--no-filters", str(ours)).stdout.strip()


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
    pull_request: bool = False,
    open_pull: OpenPull | None = None,
    retry: RetryPolicy = PIN_RETRY,
) -> bool:
    """Commit `paths` as the bot on top of the remote branch and push that commit alone (or, for a
    protected branch or with `pull_request`, open a pull request); True when something was pushed.
    A tip that moves meanwhile is pinned on again, `attempts` tries in all, as `retry` waits."""
    if attempts < 1:
        raise ConfigError(f"attempts={attempts}: at least one push must be tried (--attempts 1 or more)")
    identity = ["-c", f"user.name={environ.get('GIT_AUTHOR_NAME') or BOT_NAME}"]
    identity += ["-c", f"user.email={environ.get('GIT_AUTHOR_EMAIL') or BOT_EMAIL}"]
    rel = [_inside(root, p) for p in paths]
    pins = Pins(root, rel, runner, environ, message, remote, retry.but(attempts=attempts), identity)
    target = pins.target(branch)
    if target is None:
        return False
    return Pusher(pins, target, open_pull).run(pull_request)


@dataclass
class Pusher:
    pins: Pins
    branch: str
    open_pull: OpenPull | None

    def run(self, pull_request: bool) -> bool:
        pins, where = self.pins, f"{self.pins.remote}/{self.branch}"
        tries = pins.retry.start()
        while True:
            commit = pins.commit_on(pins.tip(self.branch), self.branch)
            if commit is None:
                pins.runner.say(f"{', '.join(pins.rel)}: nothing to commit ({where} has it already)")
                return False
            if pull_request:
                return self.pull_request(commit, "--pull-request")
            try:
                pins.git("push", "-q", pins.remote, f"{commit}:refs/heads/{self.branch}", mutates=True)
                if not pins.runner.dry_run:
                    pins.runner.say(f"pushed {pins.message!r} to {where} ({commit[:7]}, the pin alone)")
                return True
            except CommandError as exc:
                if PROTECTED.search(exc.tail):
                    return self.pull_request(commit, f"{where} refused the push ({_refusal(exc)})")
                wait = tries.after_failure()
                if wait is None or not REJECTED.search(exc.tail):
                    raise MoltbuildError(
                        f"git push to {where} failed after {tries.failures} attempt(s): {_reason(exc)}"
                    ) from None
            pins.runner.say(
                f"{where} moved on; pinning on its new tip ({tries.failures + 1}/{pins.retry.attempts})"
            )
            tries.pause(wait)

    def pull_request(self, commit: str, why: str) -> bool:
        pins = self.pins
        head = pins.environ.get("GITHUB_SHA") or pins.git("rev-parse", "HEAD").stdout.strip()
        pr_branch = f"moltbuild/pins-{head[:7]}"
        try:
            pins.git("push", "-q", "--force", pins.remote, f"{commit}:refs/heads/{pr_branch}", mutates=True)
        except CommandError as exc:
            raise MoltbuildError(
                f"{why}; pushing the pin to {pins.remote}/{pr_branch} for a pull request failed too: "
                f"{_refusal(exc)}"
            ) from None
        pins.runner.say(f"{why}: pushed the pin to {pins.remote}/{pr_branch} for a pull request")
        body = (
            f"Pins the images built from {head[:7]} in {', '.join(pins.rel)}, made by "
            f"`invoke k8s.commit-pins` on top of {self.branch}. The branch is protected, so the pin "
            "comes as a pull request: merge it to deploy."
        )
        if self.open_pull is None:
            raise MoltbuildError(
                f"{why}; the pin is on {pins.remote}/{pr_branch}: open a pull request from it"
            )
        try:
            url = self.open_pull(pr_branch, self.branch, pins.message, body)
        except MoltbuildError as exc:
            raise MoltbuildError(
                f"{why}; the pin is on {pins.remote}/{pr_branch} but no pull request was opened: "
                f"{exc.message}"
            ) from None
        pins.runner.say(f"pull request: {url}")
        return True
