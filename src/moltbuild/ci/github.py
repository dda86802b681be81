"""GitHub's REST API (requests) for `gh.dispatch`, `gh.runs` and the pins' pull request: every call
rides out GitHub (the one retry policy, system/retry.py, with GitHub's rate limits read by
ci/backoff.py), lists are followed page by page, answers are checked."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from moltbuild.ci.backoff import GITHUB_RETRY, RateLimit, at, rate_limit
from moltbuild.errors import ConfigError, MoltbuildError
from moltbuild.refs import is_loopback
from moltbuild.settings import Secret, Settings
from moltbuild.system.processes import Runner
from moltbuild.system.retry import TRANSIENT_ERRORS, RetryPolicy, Tries, transient_status

# https://github.com/O/R, git@github.com:O/R, ssh://git@ssh.github.com:443/O/R (SSH over 443)
_REMOTE_RE = re.compile(r"github\.com(?::\d+/|[:/]+)(?P<repo>[^/\s]+/[^/\s]+?)(?:\.git)?/?$")
DEFAULT_WORKFLOW = "build-images.yml"


class GitHubError(MoltbuildError):
    """GitHub refused or could not be reached."""


def _message(resp: requests.Response) -> str:
    """GitHub's `message`, else the start of the body; one line, at most 200 characters."""
    try:
        body = resp.json()
        message = str(body.get("message") or "") if isinstance(body, dict) else ""
    except (ValueError, RecursionError):
        message = resp.text
    return " ".join(message.split())[:200]


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


class GitHubUnavailable(GitHubError):
    """GitHub kept answering 5xx, or not at all, through every retry."""


class GitHub:
    def __init__(
        self,
        api: str,
        repo: str,
        token: Secret | None,
        *,
        session: requests.Session | None = None,
        retry: RetryPolicy = GITHUB_RETRY,
        say: Callable[[str], None] = lambda line: None,
    ):
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
        self.retry = retry
        self.say = say
        self.http = session or requests.Session()
        self.http.headers.update(
            {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
        )

    def request(self, method: str, path: str, what: str, **kwargs: Any) -> requests.Response:
        """`path` under the repository (or a whole URL of this API: a `Link` page). 5xx and dropped
        connections are tried again with backoff; a rate limit is waited out (bounded)."""
        url = path if path.startswith(self.api + "/") else f"{self.api}/repos/{self.repo}{path}"
        tries = self.retry.start()
        while True:
            resp, problem = self._send(method, url, kwargs)
            if resp is not None and resp.ok:
                return resp
            if resp is not None:
                limit = rate_limit(resp.status_code, resp.headers, _message(resp), self.retry.clock.now())
                if limit is not None:
                    self._wait_out(tries, what, limit)
                    continue
                if not transient_status(resp.status_code):
                    raise self._error(resp, what)
            self._back_off(tries, what, problem)

    def _back_off(self, tries: Tries, what: str, problem: str) -> None:
        """A 5xx or a dropped connection: wait (and say so) when another try is due."""
        wait = tries.after_failure()
        if wait is None:
            raise GitHubUnavailable(
                f"{what}: {problem}, {tries.failures} tries; GitHub may be down "
                "(https://www.githubstatus.com), try again later"
            )
        self.say(f"{what}: {problem}; trying again in {wait:g}s ({tries.failures + 1}/{self.retry.attempts})")
        tries.pause(wait)

    def _wait_out(self, tries: Tries, what: str, limit: RateLimit) -> None:
        """Wait as GitHub asks (and say so); fail saying when to try again when that passes the bound."""
        if not tries.fits(limit.wait):
            until = at(self.retry.clock.now() + limit.wait)
            raise GitHubError(
                f"{what}: GitHub rate limit reached ({limit.kind}; {limit.because}): it asks to wait "
                f"{limit.wait:.0f}s, more than MOLTBUILD_GITHUB_MAX_WAIT={self.retry.max_wait:g}s allows; "
                f"try again after {until} or raise MOLTBUILD_GITHUB_MAX_WAIT"
            )
        self.say(
            f"{what}: GitHub rate limit reached ({limit.kind}; {limit.because}); "
            f"waiting {limit.wait:.0f}s as it asks"
        )
        tries.pause(limit.wait)

    def _send(self, method: str, url: str, kwargs: dict) -> tuple[requests.Response | None, str]:
        headers = {"Authorization": f"Bearer {self._token.reveal()}"}
        try:
            resp = self.http.request(method, url, headers=headers, timeout=30, **kwargs)
        except TRANSIENT_ERRORS as exc:
            return None, f"{self.api} does not answer ({str(exc).splitlines()[0][:150]})"
        except requests.RequestException as exc:  # not worth another try (an invalid URL, ...)
            raise GitHubError(f"{url.split('?')[0]}: {str(exc).splitlines()[0][:150]}") from None
        return resp, f"HTTP {resp.status_code} {_message(resp)[:80]}".rstrip()

    def _error(self, resp: requests.Response, what: str) -> GitHubError:
        message = _message(resp)
        if resp.status_code == 401:
            return GitHubError(f"{what}: GITHUB_TOKEN was rejected (401 {message}); create a new token")
        if resp.status_code == 403 and what.startswith("pull request"):
            return GitHubError(
                f"{what}: GITHUB_TOKEN lacks permission ({message}); it needs pull-requests: write "
                "(and, in a workflow, the setting 'Allow GitHub Actions to create and approve pull requests')"
            )
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

    def _json(self, resp: requests.Response) -> Any:
        try:
            return resp.json()
        except (ValueError, RecursionError):
            return None

    def _object(self, resp: requests.Response, expected: str) -> dict:
        """The answer as a JSON object. HTML (a proxy, a login page), a list, garbage: one line
        naming the URL and what was expected, not a moltbuild bug."""
        data = self._json(resp)
        if isinstance(data, dict):
            return data
        got = f"a JSON {type(data).__name__}" if data is not None else "no JSON"
        got += f" ({resp.headers.get('Content-Type') or 'no content type'})"
        raise self._garbage(resp, f"{expected}, got {got}")

    def _items(self, resp: requests.Response, key: str, expected: str) -> list[dict]:
        """`key` of the answer (the answer itself when `key` is empty): a list of objects, each
        with an integer id."""
        if key:
            items = self._object(resp, f"{expected} (an object with {key})").get(key) or []
        else:
            items = self._json(resp)
        if not isinstance(items, list) or not all(
            isinstance(i, dict) and isinstance(i.get("id"), int) for i in items
        ):
            raise self._garbage(resp, f"{key or 'the answer'} to be a list of objects with an id")
        return items

    # -- API -----------------------------------------------------------------------------------

    def pages(self, path: str, key: str, what: str, params: Mapping[str, Any], limit: int) -> list[dict]:
        """Up to `limit` items of a listed resource, page after page (`Link: rel="next"`), at most
        100 a page. A next page on another host is refused: the token goes only to this API."""
        items: list[dict] = []
        url, query = path, {**params, "per_page": min(max(limit, 1), 100)}
        while len(items) < limit:
            resp = self.request("GET", url, what, params=query)
            items += self._items(resp, key, what)
            url = resp.links.get("next", {}).get("url", "")
            if not url:
                break
            if not url.startswith(self.api + "/"):
                raise self._garbage(resp, f"the next page under {self.api}, got {url.split('?')[0]!r:.80}")
            query = {}  # the next link carries the query
        return items[:limit]

    def runs(self, workflow: str, *, limit: int = 10, **filters: str | None) -> list[dict]:
        """The workflow's newest runs; `filters`: GitHub's query parameters (event, branch, actor,
        head_sha, created); None or empty ones are not sent."""
        params = {k: v for k, v in filters.items() if v}
        return self.pages(
            f"/actions/workflows/{workflow}/runs", "workflow_runs", f"runs of {workflow}", params, limit
        )

    def dispatch(self, workflow: str, ref: str, inputs: Mapping[str, str]) -> int | None:
        """Start the workflow; the run id when GitHub returns it, else None (found by polling).
        GitHub Enterprise Server refuses `return_run_details` (422): then dispatch without it."""
        what = f"dispatch of {workflow} on {ref}"
        body: dict[str, Any] = {"ref": ref, "inputs": dict(inputs), "return_run_details": True}
        path = f"/actions/workflows/{workflow}/dispatches"
        try:
            resp = self.request("POST", path, what, json=body)
        except GitHubError as exc:
            if "return_run_details" not in exc.message:
                raise
            self.say(f"{what}: this GitHub does not know return_run_details; dispatching without it")
            resp = self.request("POST", path, what, json={"ref": ref, "inputs": dict(inputs)})
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
        path = f"/actions/runs/{run_id}/jobs"
        jobs = self.pages(path, "jobs", f"jobs of run {run_id}", {}, 1000)
        for job in jobs:
            steps = job.setdefault("steps", []) or []
            job.setdefault("name", f"#{job['id']}")
            if not isinstance(steps, list) or not all(isinstance(x, dict) and "name" in x for x in steps):
                raise GitHubError(
                    f"{self.api}/repos/{self.repo}{path}: expected each job's steps to be a list of "
                    "objects with a name; check MOLTBUILD_GITHUB_API (GitHub's REST API, e.g. "
                    "https://api.github.com)"
                )
        return jobs

    def commit_sha(self, ref: str) -> str:
        """The commit a branch, tag or SHA names now."""
        resp = self.request("GET", f"/commits/{quote(ref, safe='')}", f"commit of {ref}")
        sha = self._object(resp, "a commit (an object with sha)").get("sha")
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{40}", sha):
            raise self._garbage(resp, f"a 40-hex commit sha, got {sha!r:.60}")
        return sha

    def login(self) -> str | None:
        """The token's user; None for a token that is no user's (a GitHub App installation)."""
        url = f"{self.api}/user"
        try:
            resp = self.request("GET", url, "the token's user")
        except GitHubError as exc:
            if "lacks permission" in exc.message or "not found" in exc.message:
                return None
            raise
        login = self._object(resp, "a user (an object with login)").get("login")
        return login if isinstance(login, str) and login else None

    def pull_request(self, head: str, base: str, title: str, body: str) -> str:
        """Open a pull request of `head` into `base` (or find the open one); its web address."""
        what = f"pull request {head} -> {base}"
        payload = {"head": head, "base": base, "title": title, "body": body}
        try:
            resp = self.request("POST", "/pulls", what, json=payload)
        except GitHubError as exc:
            if "already exists" not in exc.message:
                raise
            owner = self.repo.split("/")[0]
            found = self.pages("/pulls", "", what, {"head": f"{owner}:{head}", "base": base}, 1)
            if not found:
                raise
            self.say(f"{what}: one is open already (the branch now holds this pin)")
            return str(found[0].get("html_url"))
        url = self._object(resp, "the pull request (an object with html_url)").get("html_url")
        if not isinstance(url, str):
            raise self._garbage(resp, "a pull request with an html_url")
        return url


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
    retry = GITHUB_RETRY.but(max_wait=settings.seconds("MOLTBUILD_GITHUB_MAX_WAIT"))
    token = settings.get("GITHUB_TOKEN")
    return GitHub(settings["MOLTBUILD_GITHUB_API"], repo, token, retry=retry, say=runner.say)


def state(item: dict) -> str:
    """A run's, job's or step's conclusion, else its status."""
    return item.get("conclusion") or item.get("status") or "?"


def render_runs(runs: list[dict]) -> str:
    from moltbuild.system.tables import render_table

    rows = [
        (
            r.get("run_number", ""),
            state(r),
            r.get("event", ""),
            r.get("head_branch", ""),
            (r.get("head_sha") or "")[:7],
            r.get("created_at", ""),
            r.get("html_url", ""),
        )
        for r in runs
    ]
    return render_table(("run", "state", "event", "branch", "sha", "created", "url"), rows)
