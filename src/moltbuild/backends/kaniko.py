"""Kaniko runs as a Job in the cluster that kubectl's current context names."""

from __future__ import annotations

from ..errors import MoltbuildError
from .base import Backend, BackendStatus


class KanikoBackend(Backend):
    name = "kaniko"
    binary = "kubectl"

    def status(self) -> BackendStatus:
        if not self.tool_path():
            return BackendStatus(
                self.name,
                False,
                False,
                "kubectl not installed",
                "install kubectl and configure a context for the cluster",
            )
        try:
            ctx = self.runner.run(
                [self.binary, "config", "current-context"], mutates=False, timeout=10
            ).stdout.strip()
        except MoltbuildError:
            return BackendStatus(
                self.name,
                False,
                False,
                "kubectl has no current context",
                "kubectl config use-context CONTEXT (or get a kubeconfig)",
            )
        try:
            self.runner.run(
                [self.binary, "version", "--request-timeout=5s", "-o", "json"], mutates=False, timeout=15
            )
        except MoltbuildError:
            return BackendStatus(
                self.name,
                True,
                False,
                f"cluster of context {ctx} does not answer",
                "check the VPN/kubeconfig, then kubectl get ns",
            )
        return BackendStatus(
            self.name, True, True, f"cluster of context {ctx} answers; builds run as Kaniko Jobs"
        )
