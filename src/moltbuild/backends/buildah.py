"""Daemonless buildah with chroot isolation; the storage driver comes from the probe."""

from __future__ import annotations

from ..errors import MoltbuildError
from .base import Backend, BackendStatus


class BuildahBackend(Backend):
    name = "buildah"
    binary = "buildah"

    def status(self) -> BackendStatus:
        if not self.tool_path():
            return BackendStatus(
                self.name,
                False,
                False,
                "buildah not installed",
                "invoke setup (or: apt-get install -y buildah fuse-overlayfs)",
            )
        try:
            res = self.runner.run([self.binary, "version", "--json"], mutates=False, timeout=15)
        except MoltbuildError as exc:
            return BackendStatus(
                self.name, True, False, f"buildah does not run: {exc}", "reinstall buildah (invoke setup)"
            )
        version = res.stdout.split('"version": "', 1)[-1].split('"', 1)[0] if "version" in res.stdout else "?"
        fix = ""
        if not self.storage.overlay_ok and not self.storage.fuse_overlayfs:
            fix = "apt-get install -y fuse-overlayfs for faster builds than vfs"
        return BackendStatus(
            self.name,
            True,
            True,
            f"buildah {version}, daemonless; storage driver {self.storage.driver_label} "
            f"at {self.storage.path}",
            fix,
        )
