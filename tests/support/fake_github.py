"""A FAKE GitHub REST API: a real HTTP server on loopback (werkzeug), each answer 50-150 ms late
like the real one, built from GitHub's documented responses. Not GitHub: it keeps what the tests
need, in memory.

What it serves, for one repository:
- workflow runs: list (filters `event`, `branch`, `actor`, `head_sha`, `status`, `created=>=ISO`;
  paging `per_page` (max 100, default 30) and `page`, with a `Link` header), one run, its jobs;
  a dispatch creates a run that goes queued -> in_progress -> completed as it is polled;
- a dispatch answers 200 with the run's id (`return_run_details`), or like GitHub Enterprise
  Server (`ghes=True`) 422 to `return_run_details` and 204 without it;
- `/user`, `/commits/{ref}`, pull requests (create, list with `head`/`base`, 422 for a duplicate);
- faults queued by the test: 5xx, secondary rate limits (403 + retry-after), primary ones
  (`x-ratelimit-remaining: 0`), each for the next matching request.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode

from werkzeug import Request, Response
from werkzeug.serving import make_server

PHASES = ("queued", "in_progress", "completed")


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Fault:
    method: str
    path: re.Pattern
    status: int
    headers: dict[str, str]
    message: str


@dataclass
class FakeGitHub:
    repo: str = "moltbook-org/moltbook"
    token: str = "canary-fake-github-token-not-real"
    user: str | None = "octocat"  # None: a token that is no user's (GET /user is 403)
    ghes: bool = False
    run_details: bool = True  # dispatch answers 200 with the run id (else 204)
    appear_after: int = 0  # list calls after a dispatch before its run is listed
    conclusion: str = "success"
    latency: tuple[float, float] = (0.05, 0.15)
    branches: dict[str, str] = field(default_factory=lambda: {"main": "a" * 40})
    runs: list[dict] = field(default_factory=list)
    pulls: list[dict] = field(default_factory=list)
    dispatches: list[dict] = field(default_factory=list)
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, query
    auth: set[str] = field(default_factory=set)
    faults: list[Fault] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._ids = itertools.count(1000)
        self._lock = threading.RLock()
        self._polls: dict[int, int] = {}
        self._hidden: dict[int, int] = {}
        self._random = random.Random(20)
        self.server = None

    # -- the test's side ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def start(self) -> FakeGitHub:
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()

    def fail(self, method: str, path: str, status: int, times: int = 1, message: str = "", **headers):
        """The next `times` requests matching (method, path regex) get `status` with `headers`."""
        for _ in range(times):
            self.faults.append(
                Fault(
                    method,
                    re.compile(path),
                    status,
                    {k.replace("_", "-"): v for k, v in headers.items()},
                    message or {502: "Server Error"}.get(status, "fault"),
                )
            )

    def add_run(self, hidden_for: int = 0, **fields) -> dict:
        """A run already there (someone else's, an older one): GitHub's fields, overridable.
        `hidden_for`: list calls that do not show it yet (it appears later)."""
        run_id = next(self._ids)
        run = {
            "id": run_id,
            "run_number": run_id - 999,
            "name": "build-images",
            "path": ".github/workflows/build-images.yml",
            "workflow_id": 161335,
            "event": "push",
            "status": "completed",
            "conclusion": "success",
            "head_branch": "main",
            "head_sha": self.branches.get("main", "a" * 40),
            "actor": {"login": "someone"},
            "triggering_actor": {"login": "someone"},
            "created_at": iso(time.time() - 3600),
            "html_url": f"https://github.example/{self.repo}/actions/runs/{run_id}",
        } | fields
        with self._lock:
            self.runs.insert(0, run)
            self._hidden[run_id] = hidden_for
        return run

    def count(self, method: str, pattern: str) -> int:
        return sum(1 for m, p, _ in self.requests if m == method and re.search(pattern, p))

    # -- the server's side -------------------------------------------------------------------

    @Request.application
    def app(self, request: Request) -> Response:
        time.sleep(self._random.uniform(*self.latency))
        with self._lock:
            self.requests.append((request.method, request.path, request.query_string.decode()))
            self.auth.add(request.headers.get("Authorization", ""))
            if request.headers.get("Authorization") != f"Bearer {self.token}":
                return self._error(401, "Bad credentials")
            fault = next(
                (f for f in self.faults if f.method == request.method and f.path.search(request.path)), None
            )
            if fault:
                self.faults.remove(fault)
                return self._error(fault.status, fault.message, fault.headers)
            return self._route(request)

    def _route(self, request: Request) -> Response:
        base = f"/repos/{self.repo}"
        path = request.path
        routes = [
            ("GET", r"/user", self._user),
            ("GET", rf"{base}/commits/(?P<ref>.+)", self._commit),
            ("GET", rf"{base}/actions/workflows/(?P<wf>[^/]+)/runs", self._list_runs),
            ("POST", rf"{base}/actions/workflows/(?P<wf>[^/]+)/dispatches", self._dispatch),
            ("GET", rf"{base}/actions/runs/(?P<id>\d+)", self._run),
            ("GET", rf"{base}/actions/runs/(?P<id>\d+)/jobs", self._jobs),
            ("POST", rf"{base}/pulls", self._open_pull),
            ("GET", rf"{base}/pulls", self._list_pulls),
        ]
        for method, pattern, handler in routes:
            found = re.fullmatch(pattern, path)
            if found and method == request.method:
                return handler(request, **found.groupdict())
        return self._error(404, "Not Found")

    @staticmethod
    def _json(body, status: int = 200, headers: dict | None = None) -> Response:
        return Response(json.dumps(body), status=status, headers=headers, content_type="application/json")

    def _error(self, status: int, message: str, headers: dict | None = None) -> Response:
        body = {
            "message": message,
            "documentation_url": "https://docs.github.com/rest",
            "status": str(status),
        }
        return self._json(body, status, headers)

    def _user(self, request: Request) -> Response:
        if self.user is None:
            return self._error(403, "Resource not accessible by integration")
        return self._json({"login": self.user, "id": 1, "type": "User"})

    def _commit(self, request: Request, ref: str) -> Response:
        sha = self.branches.get(ref) or (ref if re.fullmatch(r"[0-9a-f]{40}", ref) else None)
        if not sha:
            return self._error(422, f"No commit found for SHA: {ref}")
        return self._json({"sha": sha})

    def _visible(self, run: dict) -> bool:
        left = self._hidden.get(run["id"], 0)
        if left:
            self._hidden[run["id"]] = left - 1
        return not left

    def _list_runs(self, request: Request, wf: str) -> Response:
        args = request.args
        runs = [r for r in self.runs if r["path"].endswith("/" + wf) and self._visible(r)]
        for key in ("event", "branch", "head_sha", "status"):
            if args.get(key):
                field_ = "head_branch" if key == "branch" else key
                runs = [r for r in runs if r.get(field_) == args[key]]
        if args.get("actor"):
            runs = [r for r in runs if r["actor"]["login"] == args["actor"]]
        if args.get("created", "").startswith(">="):
            runs = [r for r in runs if r["created_at"] >= args["created"][2:]]
        return self._page(request, runs, "workflow_runs")

    def _page(self, request: Request, items: list[dict], key: str | None) -> Response:
        per_page = min(int(request.args.get("per_page", 30)), 100)
        page = int(request.args.get("page", 1))
        chunk = items[(page - 1) * per_page : page * per_page]
        last = max(1, -(-len(items) // per_page))
        links = []
        for rel, number in (("next", page + 1), ("last", last)):
            if number <= last and (rel == "last" or page < last):
                query = {**request.args.to_dict(), "page": number, "per_page": per_page}
                links.append(f'<{request.base_url}?{urlencode(query)}>; rel="{rel}"')
        headers = {"Link": ", ".join(links)} if links else {}
        body = {"total_count": len(items), key: chunk} if key else chunk
        return self._json(body, headers=headers)

    def _dispatch(self, request: Request, wf: str) -> Response:
        body = request.get_json()
        self.dispatches.append(body)
        if self.ghes and "return_run_details" in body:
            return self._error(422, 'Invalid request.\n\n"return_run_details" is not a permitted key.')
        ref = body["ref"]
        if ref not in self.branches:
            return self._error(422, f"No ref found for: {ref}")
        run = self.add_run(
            path=f".github/workflows/{wf}",
            event="workflow_dispatch",
            status="queued",
            conclusion=None,
            head_branch=ref,
            head_sha=self.branches[ref],
            actor={"login": self.user or "moltbuild-app[bot]"},
            triggering_actor={"login": self.user or "moltbuild-app[bot]"},
            created_at=iso(time.time()),
            hidden_for=self.appear_after,
        )
        if body.get("return_run_details") and self.run_details and not self.ghes:
            return self._json({"workflow_run_id": run["id"], "html_url": run["html_url"]})
        return Response(status=204)

    def _find(self, run_id: str) -> dict | None:
        return next((r for r in self.runs if r["id"] == int(run_id)), None)

    def _run(self, request: Request, id: str) -> Response:
        run = self._find(id)
        if run is None:
            return self._error(404, "Not Found")
        if run["status"] != "completed":
            self._polls[run["id"]] = polls = self._polls.get(run["id"], 0) + 1
            run["status"] = PHASES[min(polls // 2, 2)]
            if run["status"] == "completed":
                run["conclusion"] = self.conclusion
        return self._json(run)

    def _jobs(self, request: Request, id: str) -> Response:
        run = self._find(id)
        if run is None:
            return self._error(404, "Not Found")
        step = {"number": 1, "name": "Build", "status": run["status"], "conclusion": run["conclusion"]}
        job = {
            "id": run["id"] * 10,
            "name": "build",
            "status": run["status"],
            "conclusion": run["conclusion"],
            "steps": [step],
        }
        return self._page(request, [job], "jobs")

    def _open_pull(self, request: Request) -> Response:
        body = request.get_json()
        missing = [k for k in ("head", "base", "title") if not body.get(k)]
        if missing:
            return self._error(422, f"Validation Failed: {missing[0]} missing")
        if any(p["head"]["ref"] == body["head"] and p["state"] == "open" for p in self.pulls):
            return self._error(422, f"Validation Failed: A pull request already exists for {body['head']}.")
        number = len(self.pulls) + 1
        pull = {
            "id": 5000 + number,
            "number": number,
            "state": "open",
            "title": body["title"],
            "body": body.get("body", ""),
            "head": {"ref": body["head"], "label": f"{self.repo.split('/')[0]}:{body['head']}"},
            "base": {"ref": body["base"]},
            "html_url": f"https://github.example/{self.repo}/pull/{number}",
        }
        self.pulls.append(pull)
        return self._json(pull, 201)

    def _list_pulls(self, request: Request) -> Response:
        pulls = [p for p in self.pulls if p["state"] == request.args.get("state", "open")]
        if request.args.get("head"):
            pulls = [p for p in pulls if p["head"]["label"] == request.args["head"]]
        if request.args.get("base"):
            pulls = [p for p in pulls if p["base"]["ref"] == request.args["base"]]
        return self._page(request, pulls, None)
