"""Daemonless buildah with chroot isolation; the storage driver comes from the probe."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ..baseimages import parse_ref, registries_conf
from ..errors import ConfigError, MoltbuildError
from ..probe import default_storage_root
from .base import Backend, BackendStatus, retry_transient

if TYPE_CHECKING:
    from ..credentials import Credentials
    from ..plan import ImagePlan


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
            version = json.loads(res.stdout).get("version", "?")
        except (MoltbuildError, ValueError) as exc:
            return BackendStatus(
                self.name, True, False, f"buildah does not run: {exc}", "reinstall buildah (invoke setup)"
            )
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

    # -- argv, kept pure -----------------------------------------------------------------------

    @property
    def storage_root(self) -> Path:
        configured = self.settings.get("MOLTBUILD_STORAGE_ROOT")
        return Path(configured) if configured else default_storage_root(os.environ)

    def global_argv(self) -> list[str]:
        argv = [self.binary, "--storage-driver", self.storage.buildah_driver]
        if self.settings.get("MOLTBUILD_STORAGE_ROOT"):
            root = self.storage_root
            argv += ["--root", str(root), "--runroot", f"{root}-run"]
        if self.storage.buildah_driver == "overlay" and not self.storage.overlay_ok:
            argv += ["--storage-opt", f"overlay.mount_program={self.storage.fuse_overlayfs}"]
        return argv

    def _file(self, name: str) -> str:
        assert self.workdir is not None, "prepare() first"
        return str(self.workdir / name)

    def tls_argv(self, host: str) -> list[str]:
        if host in self.settings.insecure_registries:
            return ["--tls-verify=false"]
        if self.settings.get("MOLTBUILD_REGISTRY_CA"):
            return ["--cert-dir", self._file("certs")]
        return []

    def env(self) -> dict[str, str]:
        return {"CONTAINERS_REGISTRIES_CONF": self._file("registries.conf"), "BUILDAH_ISOLATION": "chroot"}

    def build_argv(self, image: ImagePlan, *, no_cache: bool = False) -> list[str]:
        argv = [
            *self.global_argv(),
            "bud",
            "--isolation",
            "chroot",
            "--format",
            "docker",
            "--layers",
            "--pull=false",
            "--authfile",
            self._file("auth.json"),
            "-f",
            str(image.dockerfile),
        ]
        if len(image.platforms) > 1:
            # One image per platform, collected in a manifest list; an iidfile holds only one ID.
            argv += ["--platform", ",".join(image.platforms), "--manifest", image.refs[0]]
        else:
            argv += ["--iidfile", self.iidfile(image)]
            argv += [a for ref in image.refs for a in ("-t", ref)]
            if image.platforms:
                argv += ["--platform", image.platforms[0]]
        argv += [a for k, v in image.build_args.items() for a in ("--build-arg", f"{k}={v}")]
        argv += [a for k, v in image.labels.items() for a in ("--label", f"{k}={v}")]
        if image.target:
            argv += ["--target", image.target]
        if no_cache:
            argv.append("--no-cache")
        return [*argv, str(image.context)]

    def push_argv(self, image: ImagePlan, ref: str, digestfile: str) -> list[str]:
        common = [
            "--authfile",
            self._file("auth.json"),
            *self.tls_argv(image.registry_host),
            "--digestfile",
            digestfile,
        ]
        if len(image.platforms) > 1:
            return [
                *self.global_argv(),
                "manifest",
                "push",
                "--all",
                *common,
                image.refs[0],
                f"docker://{ref}",
            ]
        return [*self.global_argv(), "push", *common, ref, f"docker://{ref}"]

    # -- actions -------------------------------------------------------------------------------

    def prepare(self, workdir: Path, mirror: str | None) -> None:
        super().prepare(workdir, mirror)
        (workdir / "auth.json").write_text('{"auths": {}}')
        (workdir / "auth.json").chmod(0o600)
        (workdir / "registries.conf").write_text(registries_conf(mirror, self.settings.insecure_registries))
        ca = self.settings.get("MOLTBUILD_REGISTRY_CA")
        if ca:
            (workdir / "certs").mkdir(exist_ok=True)
            shutil.copy(ca, workdir / "certs" / "ca.crt")

    def login(self, host: str, creds: Credentials) -> None:
        self.runner.run(
            [
                self.binary,
                "login",
                "--authfile",
                self._file("auth.json"),
                *self.tls_argv(host),
                "--username",
                creds.username,
                "--password-stdin",
                host,
            ],
            stdin=creds.password,
            env=self.env(),
            timeout=120,
            what=f"buildah login to {host}",
        )

    def pull_base(self, base: str, source: str) -> None:
        # registries.conf rewrites docker.io to the mirror, so the image keeps its Docker Hub name.
        argv = [
            *self.global_argv(),
            "pull",
            "--policy",
            "missing",
            "--authfile",
            self._file("auth.json"),
            str(parse_ref(base)),
        ]
        self.runner.run(
            argv, env=self.env(), timeout=1800, what=f"pulling base image {base} from {source}", echo=True
        )

    def build(self, image: ImagePlan, *, no_cache: bool, prefix: str, log_path: Path | None) -> None:
        self.runner.stream(
            self.build_argv(image, no_cache=no_cache),
            prefix=prefix,
            env=self.env(),
            log_path=log_path,
            what=f"buildah build of {image.name}",
        )

    def add_tags(self, image: ImagePlan, tags: list[str]) -> None:
        if len(image.platforms) > 1:
            raise ConfigError(
                f"{image.name}: a multi-platform manifest list is tagged remotely; use "
                "invoke tag --source REF --tag T"
            )
        new = [f"{image.repository}:{tag}" for tag in tags]
        self.runner.run(
            [*self.global_argv(), "tag", image.refs[0], *new],
            env=self.env(),
            timeout=60,
            what=f"buildah tag of {image.name}",
            echo=True,
        )

    def push(self, image: ImagePlan, *, prefix: str, log_path: Path | None) -> str:
        digests = []
        for i, ref in enumerate(image.refs):
            digestfile = self._file(f"{image.name}.{i}.digest")
            argv = self.push_argv(image, ref, digestfile)
            retry_transient(
                lambda argv=argv, ref=ref: self.runner.stream(
                    argv, prefix=prefix, env=self.env(), log_path=log_path, what=f"push of {ref}"
                ),
                say=lambda line: self.runner.say(prefix + line),
            )
            if not self.runner.dry_run:
                digests.append(Path(digestfile).read_text().strip())
        return digests[0] if digests else ""
