"""`invoke gh.dispatch` / `invoke gh.runs`: start the build workflow and follow it over GitHub's
REST API (requests), in place of `gh workflow run` + `gh run watch`."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from moltbuild.errors import ConfigError, MoltbuildError
from moltbuild.refs import is_loopback
from moltbuild.settings import Secret, Settings
from moltbuild.system.processes import Runner

# https://github.com/O/R, git@github.com:O/R, ssh://git@ssh.github.com:443/O/R (SSH over 443)
_REMOTE_RE = re.compile(r"github\.com(?::\d+/|[:/]+)(?P<repo>[^/\s]+/[^/\s]+?)(?:\.git)?/?$")
DEFAULT_WORKFLOW = "build-images.yml"


class GitHubError(MoltbuildError):
    """GitHub refused or could not be reached."""


def repo_from_remote(url: str) -> str | None:
    found = _REMOTE_RE.search(url.strip())
    return found.group("repo") if found else None


def parse_inputs(pairs: list[str]) -> dict[str, str]:
    inputs = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--input {pair!r} must be KEY=VALUE, e.g. --input images=api")
        inputs[key.strip()] = value
    return inputs


class GitHub:
    def __init__(self, api: str, repo: str, token: Secret | None, *, session: requests.Session | None = None):
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo or ""):
            raise ConfigError(
                f"MOLTBUILD_GITHUB_REPO={repo!r} must be OWNER/NAME "
                "(or run from a clone whose origin is on GitHub)"
            )
        if not token:
            raise ConfigError(
                "gh tasks need GITHUB_TOKEN (a token with actions: write, or the repo + workflow scopes)"
            )
        parts = urlsplit(api)
        if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback(parts.netloc)):
            raise ConfigError(
                f"MOLTBUILD_GITHUB_API={api!r}: GITHUB_TOKEN goes only over https:// (plain http only "
                "to this machine); use the https:// address of the API"
            )
        self.api = api.rstrip("/")
        self.repo = repo
        self._token = token
        self.http = session or requests.Session()
        self.http.headers.update(
            {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
        )

    def request(self, method: str, path: str, what: str, **kwargs: Any) -> requests.Response:
        url = f"{self.api}/repos/{self.repo}{path}"
        headers = {"Authorization": f"Bearer {self._token.reveal()}"}
        try:
            resp = self.http.request(method, url, headers=headers, timeout=30, **kwargs)
        except requests.RequestException as exc:
            raise GitHubError(
                f"{what}: {self.api} does not answer ({str(exc).splitlines()[0][:150]})"
            ) from None
        if resp.ok:
            return resp
        raise self._error(resp, what)

    def _error(self, resp: requests.Response, what: str) -> GitHubError:
        try:
            message = str(resp.json().get("message") or "")[:200]
        except ValueError:
            message = resp.text[:200]
        if resp.status_code == 401:
            return GitHubError(f"{what}: GITHUB_TOKEN was rejected (401 {message}); create a new token")
        if resp.status_code in (403, 429) and (
            resp.headers.get("X-RateLimit-Remaining") == "0"
            or resp.status_code == 429
            or "retry-after" in {k.lower() for k in resp.headers}
            or "rate limit" in message.lower()
        ):
            retry = resp.headers.get("Retry-After", "")
            if retry.isdigit():  # the secondary rate limit: wait that long
                return GitHubError(f"{what}: GitHub rate limit reached (secondary); retry in {retry}s")
            reset = resp.headers.get("X-RateLimit-Reset", "")
            when = (
                datetime.fromtimestamp(int(reset), UTC).strftime("%H:%M:%S UTC")
                if reset.isdigit()
                else "later"
            )
            return GitHubError(f"{what}: GitHub rate limit reached; it resets at {when}")
        if resp.status_code == 403:
            return GitHubError(
                f"{what}: GITHUB_TOKEN lacks permission ({message}); it needs actions: write "
                "(fine-grained) or the repo and workflow scopes (classic)"
            )
        if resp.status_code == 404:
            return GitHubError(
                f"{what}: not found in {self.repo} ({message}); check the workflow file name, "
                "MOLTBUILD_GITHUB_REPO, and that the token can see the repository"
            )
        if resp.status_code == 422:
            return GitHubError(f"{what}: GitHub refused the request: {message}")
        return GitHubError(f"{what}: HTTP {resp.status_code}: {message}")

    # -- answers -------------------------------------------------------------------------------

    @staticmethod
    def _garbage(resp: requests.Response, expected: str) -> GitHubError:
        return GitHubError(
            f"{resp.url.split('?')[0]}: expected {expected}; check MOLTBUILD_GITHUB_API "
            "(GitHub's REST API, e.g. https://api.github.com)"
        )

    def _object(self, resp: requests.Response, expected: str) -> dict:
        """The answer as a JSON object. HTML (a proxy, a login page), a list, garbage: one line
        naming the URL and what was expected, not a moltbuild bug."""
        try:
            data = resp.json()
        except (ValueError, RecursionError):
            data = None
        if isinstance(data, dict):
            return data
        got = f"a JSON {type(data).__name__}" if data is not None else "no JSON"
        got += f" ({resp.headers.get('Content-Type') or 'no content type'})"
        raise self._garbage(resp, f"{expected}, got {got}")

    def _items(self, resp: requests.Response, key: str, expected: str) -> list[dict]:
        """`key` of the answer: a list of objects, each with an integer id."""
        items = self._object(resp, f"{expected} (an object with {key})").get(key) or []
        if not isinstance(items, list) or not all(
            isinstance(i, dict) and isinstance(i.get("id"), int) for i in items
        ):
            raise self._garbage(resp, f"{key} to be a list of objects with an id")
        return items

    # -- API -----------------------------------------------------------------------------------

    def runs(
        self, workflow: str, *, limit: int = 10, event: str | None = None, branch: str | None = None
    ) -> list[dict]:
        params: dict[str, Any] = {"per_page": min(max(limit, 1), 100)}
        if event:
            params["event"] = event
        if branch:
            params["branch"] = branch
        resp = self.request(
            "GET", f"/actions/workflows/{workflow}/runs", f"runs of {workflow}", params=params
        )
        return self._items(resp, "workflow_runs", f"the runs of {workflow}")[:limit]

    def dispatch(self, workflow: str, ref: str, inputs: Mapping[str, str]) -> int | None:
        """Start the workflow; the run id when GitHub returns it, else None (found by polling)."""
        resp = self.request(
            "POST",
            f"/actions/workflows/{workflow}/dispatches",
            f"dispatch of {workflow} on {ref}",
            json={"ref": ref, "inputs": dict(inputs), "return_run_details": True},
        )
        if resp.status_code == 200 and resp.content:
            run_id = self._object(resp, "the dispatched run (an object with workflow_run_id)").get(
                "workflow_run_id"
            )
            if run_id is not None and not isinstance(run_id, int):
                raise self._garbage(resp, f"an integer workflow_run_id, got {run_id!r:.60}")
            return run_id or None
        return None

    def run(self, run_id: int) -> dict:
        resp = self.request("GET", f"/actions/runs/{run_id}", f"run {run_id}")
        run = self._object(resp, f"run {run_id} (an object with id and status)")
        if not isinstance(run.get("id"), int) or not isinstance(run.get("status"), str):
            raise self._garbage(resp, f"run {run_id} with an integer id and a status")
        return run

    def jobs(self, run_id: int) -> list[dict]:
        resp = self.request("GET", f"/actions/runs/{run_id}/jobs", f"jobs of run {run_id}")
        jobs = self._items(resp, "jobs", f"the jobs of run {run_id}")
        for job in jobs:
            steps = job.setdefault("steps", []) or []
            job.setdefault("name", f"#{job['id']}")
            if not isinstance(steps, list) or not all(isinstance(x, dict) and "name" in x for x in steps):
                raise self._garbage(resp, "each job's steps to be a list of objects with a name")
        return jobs


def _state(item: dict) -> str:
    return item.get("conclusion") or item.get("status") or "?"


class Watcher:
    """Follow one run to its end: a line for every change of the run, its jobs and their steps."""

    def __init__(self, gh: GitHub, run_id: int, say: Callable[[str], None]):
        self.gh, self.run_id, self.say = gh, run_id, say
        self.seen: dict[str, str] = {}

    def _note(self, key: str, label: str, state: str) -> None:
        if self.seen.get(key) != state:
            self.seen[key] = state
            self.say(f"{label}: {state}")

    def poll(self, run: dict | None = None) -> dict:
        """One look at the run (`run` when just fetched) and its jobs; prints what changed."""
        run = run or self.gh.run(self.run_id)
        self._note("run", f"run #{run.get('run_number', self.run_id)}", _state(run))
        for job in self.gh.jobs(self.run_id):
            self._note(f"job {job['id']}", f"  job {job['name']}", _state(job))
            for step in job.get("steps") or []:
                self._note(
                    f"step {job['id']} {step.get('number')}",
                    f"    {job['name']} / {step['name']}",
                    _state(step),
                )
        return run

    def failed_step(self) -> str:
        for job in self.gh.jobs(self.run_id):
            for step in job.get("steps") or []:
                if step.get("conclusion") in ("failure", "timed_out", "cancelled"):
                    return f"job {job['name']}, step {step['name']!r} ({step['conclusion']})"
            if job.get("conclusion") in ("failure", "timed_out", "cancelled"):
                return f"job {job['name']} ({job['conclusion']})"
        return "no failed step reported"


def dispatch_and_watch(
    gh: GitHub,
    *,
    workflow: str,
    ref: str,
    inputs: Mapping[str, str],
    watch: bool,
    timeout: float,
    interval: float,
    say: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict | None:
    """Dispatch, find the run it created, and with `watch` follow it; a failed run raises."""
    deadline = clock() + timeout
    known = {r["id"] for r in gh.runs(workflow, limit=20, event="workflow_dispatch", branch=ref)}
    run_id = gh.dispatch(workflow, ref, inputs)
    say(f"dispatched {workflow} on {ref}" + (f" with {dict(inputs)}" if inputs else ""))
    while run_id is None:
        fresh = [
            r
            for r in gh.runs(workflow, limit=20, event="workflow_dispatch", branch=ref)
            if r["id"] not in known
        ]
        if fresh:
            run_id = max(fresh, key=lambda r: r["id"])["id"]
            break
        if clock() >= deadline:
            raise GitHubError(
                f"the run of {workflow} did not appear within {timeout:.0f}s; see the Actions tab"
            )
        sleep(interval)
    run = gh.run(run_id)
    say(f"run #{run.get('run_number', run_id)}: {run.get('html_url', '')}")
    if not watch:
        return run
    watcher = Watcher(gh, run_id, say)
    first: dict | None = run
    while True:
        run, first = watcher.poll(first), None
        if run.get("status") == "completed":
            break
        if clock() >= deadline:
            raise GitHubError(
                f"run #{run.get('run_number')} still {run.get('status')} after {timeout:.0f}s: "
                f"{run.get('html_url')}"
            )
        sleep(interval)
    if run.get("conclusion") != "success":
        raise GitHubError(
            f"run #{run.get('run_number')} concluded {run.get('conclusion')}: {watcher.failed_step()}; "
            f"{run.get('html_url')}"
        )
    say(f"run #{run.get('run_number')} succeeded")
    return run


def client(settings: Settings, runner: Runner) -> GitHub:
    """A client from the settings: token, API base, repository (setting, else the origin remote)."""
    repo = settings.get("MOLTBUILD_GITHUB_REPO")
    if not repo:
        origin = runner.run(
            ["git", "-C", str(settings.project_root), "config", "--get", "remote.origin.url"],
            mutates=False,
            check=False,
            timeout=10,
        ).stdout
        repo = repo_from_remote(origin)
        if not repo:
            raise ConfigError(
                "cannot tell the GitHub repository: the origin remote is not on github.com; "
                "set MOLTBUILD_GITHUB_REPO=OWNER/NAME"
            )
    return GitHub(settings["MOLTBUILD_GITHUB_API"], repo, settings.get("GITHUB_TOKEN"))


def render_runs(runs: list[dict]) -> str:
    from moltbuild.system.tables import render_table

    rows = [
        (
            r.get("run_number", ""),
            _state(r),
            r.get("event", ""),
            r.get("head_branch", ""),
            (r.get("head_sha") or "")[:7],
            r.get("created_at", ""),
            r.get("html_url", ""),
        )
        for r in runs
    ]
    return render_table(("run", "state", "event", "branch", "sha", "created", "url"), rows)
