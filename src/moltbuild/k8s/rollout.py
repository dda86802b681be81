"""Waiting for applied Deployments to roll out, with the reason when they do not: the new
ReplicaSet (the Deployment's current revision) is ready when as many of its pods are ready as the
Deployment wants; a problem of one of its pods (`k8s/podstatus`) fails it at once, with the last log
lines of the container concerned. Pods are watched (no fixed sleeps): each change, or at most every
`_RECHECK_S` for what only events say (a failing probe), looks again."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from moltbuild.k8s import podstatus
from moltbuild.k8s.cluster import Cluster
from moltbuild.k8s.podstatus import Problem

_RECHECK_S = 2
_LOG_LINES = 20
_REVISION = "deployment.kubernetes.io/revision"


@dataclass(frozen=True)
class Result:
    kind: str
    name: str
    ready: bool
    problem: Problem | None = None
    pods: tuple[Mapping[str, Any], ...] = ()  # the new ReplicaSet's ready pods
    lines: tuple[str, ...] = ()  # the last log lines of the container that failed
    pod: str = ""  # the pod that failed

    @property
    def reason(self) -> str:
        return self.problem.line() if self.problem else ""


@dataclass
class Rollout:
    """Deployments (name -> the generation applied) in `cluster.namespace`, whose pods carry
    `labels` (a selector)."""

    cluster: Cluster
    labels: str
    generations: dict[str, int]
    timeout: float = 300
    results: dict[str, Result] = field(default_factory=dict)

    def wait(self, settled: Callable[[Result], None]) -> dict[str, Result]:
        """Until every Deployment is ready or failed (`settled` called for each as it does)."""
        pending = dict(self.generations)
        deadline = time.monotonic() + self.timeout
        while pending:
            pods = self.cluster.objects("v1", "Pod", self.labels)
            sets = self.cluster.objects("apps/v1", "ReplicaSet", self.labels)["items"]
            for name in list(pending):
                result = self._check(name, pending[name], pods["items"], sets)
                if result is not None:
                    del pending[name]
                    self.results[name] = result
                    settled(result)
            left = deadline - time.monotonic()
            if pending and left <= 0:
                for name in pending:
                    self.results[name] = result = _timed_out(name, self.timeout)
                    settled(result)
                break
            if pending:
                since = pods["metadata"]["resourceVersion"]
                wait_s = max(1, min(_RECHECK_S, int(left)))
                next(self.cluster.changes("v1", "Pod", self.labels, since, wait_s), None)
        return self.results

    def _check(
        self, name: str, generation: int, pods: list[dict[str, Any]], sets: list[dict[str, Any]]
    ) -> Result | None:
        found = self.cluster.read("apps/v1", "Deployment", name)
        if found is None:
            return Result("Deployment", name, False, Problem("deleted", "the Deployment is gone"))
        if int(found.get("status", {}).get("observedGeneration") or 0) < generation:
            return None
        replica_set = _current(found, sets)
        if replica_set is None:
            return None
        hash_ = replica_set["metadata"].get("labels", {}).get("pod-template-hash")
        mine = [
            p
            for p in pods
            if p["metadata"].get("labels", {}).get("pod-template-hash") == hash_ and not podstatus.deleting(p)
        ]
        want = int(found.get("spec", {}).get("replicas", 1))
        ready = [p for p in mine if podstatus.ready(p)]
        if len(ready) >= want:
            return Result("Deployment", name, True, pods=tuple(ready))
        for pod in mine:
            failed = self._pod_problem(pod)
            if failed is not None:
                return self._failed(name, pod, failed)
        if not mine:
            return self._not_created(name, replica_set)
        return None

    def _pod_problem(self, pod: dict[str, Any]) -> Problem | None:
        found = podstatus.problem(pod)
        if found is None and podstatus.not_ready_running(pod):
            events = self.cluster.events("Pod", pod["metadata"]["name"])
            warnings = [(str(e.reason), str(e.message or ""), int(e.count or 1)) for e in events]
            found = podstatus.readiness_problem(pod, warnings)
        return found

    def _failed(self, name: str, pod: dict[str, Any], problem: Problem) -> Result:
        pod_name = pod["metadata"]["name"]
        lines: list[str] = []
        if problem.reason in ("crash", "readiness") and problem.container:
            lines = self.cluster.log_tail(pod_name, problem.container, _LOG_LINES, previous=problem.previous)
        return Result("Deployment", name, False, problem, lines=tuple(lines), pod=pod_name)

    def _not_created(self, name: str, replica_set: dict[str, Any]) -> Result | None:
        """The ReplicaSet cannot create its pods (an admission policy, a quota)."""
        for event in self.cluster.events("ReplicaSet", replica_set["metadata"]["name"]):
            if event.reason == "FailedCreate":
                return Result("Deployment", name, False, Problem("start", str(event.message or "")))
        return None


def _current(deployment: Mapping[str, Any], sets: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The Deployment's ReplicaSet of its current revision."""
    uid = deployment["metadata"].get("uid")
    revision = deployment["metadata"].get("annotations", {}).get(_REVISION)
    for replica_set in sets:
        meta = replica_set["metadata"]
        owned = any(o.get("uid") == uid for o in meta.get("ownerReferences") or [])
        if owned and meta.get("annotations", {}).get(_REVISION) == revision:
            return replica_set
    return None


def _timed_out(name: str, timeout: float) -> Result:
    return Result("Deployment", name, False, Problem("timeout", f"not ready after {timeout:.0f} s"))
