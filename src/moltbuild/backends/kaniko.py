"""Kaniko runs as a Job in the cluster that kubectl's current context names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError, MoltbuildError
from .base import Backend, BackendStatus, ImageResult, JobLog, PushTarget, RunSpec

if TYPE_CHECKING:
    from ..plan import ImagePlan

NOT_HERE = (
    "the kaniko backend builds in the cluster through `invoke kaniko.build`; "
    "here use --backend buildah or docker"
)


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

    def open(self, run: RunSpec) -> None:
        raise ConfigError(NOT_HERE)

    def produce(self, image: ImagePlan, *, push: bool, no_cache: bool, log: JobLog) -> ImageResult:
        raise ConfigError(NOT_HERE)

    def push_built(self, target: PushTarget, *, log: JobLog) -> ImageResult:
        raise ConfigError(
            f"{target.name} was built and pushed by a Kaniko Job; nothing local to push "
            "(use `invoke tag --tag T` to add tags in the registry)"
        )
