"""Why a pod is not becoming ready, read from its status as the API server returns it (pure JSON
in, a reason out): a container that exited (a crash loop starts with the first exit, so it is
reported then, not after the back-off), an image that cannot be pulled, a container the kubelet
cannot create, a pod no node can take, a readiness probe that keeps failing (from the pod's
Warning events: the status only says "not ready")."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_PULL = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "RegistryUnavailable")
_START = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError", "PreCreateHookError")
_PROBE_FAILURES = 3  # a probe's failureThreshold when the manifest sets none


@dataclass(frozen=True)
class Problem:
    reason: str  # crash, pull, start, unschedulable, readiness
    message: str
    container: str = ""
    previous: bool = False  # the logs that explain it are the previous instance's (restarted since)

    def line(self) -> str:
        where = f"container {self.container}: " if self.container else ""
        return f"{self.reason}: {where}{self.message}"


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        data = data.get(key) if isinstance(data, Mapping) else None
    return data


def deleting(pod: Mapping[str, Any]) -> bool:
    return bool(_get(pod, "metadata", "deletionTimestamp"))


def ready(pod: Mapping[str, Any]) -> bool:
    conditions = _get(pod, "status", "conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def problem(pod: Mapping[str, Any]) -> Problem | None:
    """What keeps the pod from starting or running, or None (it may still become ready)."""
    for condition in _get(pod, "status", "conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
            return Problem("unschedulable", str(condition.get("message") or "no node can run it"))
    statuses = [*(_get(pod, "status", "initContainerStatuses") or [])]
    statuses += _get(pod, "status", "containerStatuses") or []
    for status in statuses:
        found = _container_problem(status)
        if found is not None:
            return found
    return None


def _container_problem(status: Mapping[str, Any]) -> Problem | None:
    name = str(status.get("name") or "")
    waiting = _get(status, "state", "waiting") or {}
    reason, said = str(waiting.get("reason") or ""), str(waiting.get("message") or "").strip()
    if reason in _PULL:
        return Problem("pull", f"{reason}: {said or 'the image cannot be pulled'}", name)
    if reason in _START:
        return Problem("start", f"{reason}: {said or 'the container cannot start'}", name)
    now = _get(status, "state", "terminated")
    last = _get(status, "lastState", "terminated")
    exited = now or last
    if exited is None and reason != "CrashLoopBackOff":
        return None
    code = (exited or {}).get("exitCode")
    why = (exited or {}).get("reason") or "exited"
    return Problem("crash", f"exited with code {code} ({why})", name, previous=now is None)


def not_ready_running(pod: Mapping[str, Any]) -> list[str]:
    """The containers that run but are not ready (a readiness probe may be failing)."""
    if _get(pod, "status", "phase") != "Running":
        return []
    statuses = _get(pod, "status", "containerStatuses") or []
    return [str(s.get("name")) for s in statuses if running(s) and not s.get("ready")]


def running(status: Mapping[str, Any]) -> bool:
    """A container status says it runs (`state.running` may be an empty mapping)."""
    return isinstance(_get(status, "state", "running"), Mapping)


def probe_threshold(pod: Mapping[str, Any], container: str) -> int:
    for spec in _get(pod, "spec", "containers") or []:
        if spec.get("name") == container:
            return int(_get(spec, "readinessProbe", "failureThreshold") or _PROBE_FAILURES)
    return _PROBE_FAILURES


def readiness_problem(pod: Mapping[str, Any], warnings: Iterable[tuple[str, str, int]]) -> Problem | None:
    """A readiness probe failing as often as its failureThreshold, from the pod's Warning
    events (reason, message, count), or None."""
    waiting = not_ready_running(pod)
    if not waiting:
        return None
    failures = [(m, n) for r, m, n in warnings if r == "Unhealthy" and m.startswith("Readiness probe failed")]
    count = sum(n for _, n in failures)
    if failures and count >= min(probe_threshold(pod, c) for c in waiting):
        return Problem("readiness", f"{failures[-1][0]} ({count} times)", waiting[0])
    return None
