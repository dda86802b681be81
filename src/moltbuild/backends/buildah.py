"""Daemonless buildah with chroot isolation; the storage driver comes from the probe."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from moltbuild.backends import layercache
from moltbuild.backends.contract import BackendStatus, JobLog, PushTarget, RunSpec
from moltbuild.backends.local import LocalBackend
from moltbuild.backends.secrets import secret_argv, secret_files
from moltbuild.errors import CommandError, MoltbuildError
from moltbuild.plan.bases import parse_base, registries_conf
from moltbuild.smoke.run import ContainerRuntime

if TYPE_CHECKING:
    from moltbuild.plan.planner import ImagePlan
    from moltbuild.refs import ImageRef
    from moltbuild.registry.auth import Credentials


def storage_flags(root: str | Path) -> list[str]:
    """--root/--runroot for a configured graphroot. The runroot sits beside it, unless that path is
    longer than podman accepts (50 characters): then a short one derived from the graphroot, the
    same for buildah and podman (podman records it in its database and refuses another)."""
    runroot = f"{root}-run"
    if len(runroot) > 50:
        runroot = (
            f"{tempfile.gettempdir()}/moltbuild-run-{hashlib.sha256(str(root).encode()).hexdigest()[:12]}"
        )
    return ["--root", str(root), "--runroot", runroot]


def _quoted(text: str) -> str:
    """A Dockerfile double-quoted word: `\\`, `"` and `$` (no variable expansion) escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


class BuildahBackend(LocalBackend):
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

    def global_argv(self) -> list[str]:
        argv = [self.binary, "--storage-driver", self.storage.buildah_driver]
        if self.settings.get("MOLTBUILD_STORAGE_ROOT"):
            # The probed path (expanded, absolute): buildah gets exactly what the probe tested.
            root = self.storage.path
            argv += storage_flags(root)
        if self.storage.buildah_driver == "overlay" and not self.storage.overlay_ok:
            argv += ["--storage-opt", f"overlay.mount_program={self.storage.fuse_overlayfs}"]
        return argv

    def tls_argv(self, host: str) -> list[str]:
        if host in self.settings.insecure_registries:
            return ["--tls-verify=false"]
        if self.settings.get("MOLTBUILD_REGISTRY_CA"):
            return ["--cert-dir", self._file("certs")]
        if self.settings.allows_plain_http(host):  # loopback: HTTPS if it answers so, else HTTP
            return ["--tls-verify=false"]
        return []

    def env(self) -> dict[str, str]:
        return {"CONTAINERS_REGISTRIES_CONF": self._file("registries.conf"), "BUILDAH_ISOLATION": "chroot"}

    def iidfile(self, image: ImagePlan) -> str:
        return self._file(f"{image.name}.iid")

    def build_argv(
        self,
        image: ImagePlan,
        *,
        no_cache: bool = False,
        cache: bool = True,
        secrets: Mapping[str, str] | None = None,
    ) -> list[str]:
        """`bud` for one image; with `cache` (and a planned `image.cache`) it reads and writes the
        layer cache in the registry, through the same authfile and TLS settings as the push;
        `secrets`: id -> the file holding its value (the value itself never in argv)."""
        argv = [
            *self.global_argv(),
            "bud",
            "--isolation",
            "chroot",
            "--format",
            self.settings.choice("MOLTBUILD_IMAGE_FORMAT"),
            "--layers",
            "--force-rm",  # a failed step's working container goes too (it pins images, mounts)
            "--pull=false",
            "--authfile",
            self._file("auth.json"),
            "-f",
            str(image.dockerfile),
        ]
        argv += self._labels_argv(image)
        argv += self._output_argv(image)
        argv += [a for k, v in image.build_args.items() for a in ("--build-arg", f"{k}={v}")]
        argv += ["--target", image.target] if image.target else []
        # created and every file and history time: a rebuild gives the same digest
        argv += ["--timestamp", str(image.timestamp)] if image.timestamp else []
        argv += secret_argv(secrets or {})
        return [*argv, *self._cache_flags(image, no_cache, cache), str(image.context)]

    def _labels_argv(self, image: ImagePlan) -> list[str]:
        """The labels as ONE `LABEL` step in a second Containerfile (buildah appends it to the last
        stage, as it does `--label`, which adds one step each): a commit's labels change every
        time, so each step is a layer-cache entry pushed and never reused. With --target buildah
        1.28 drops both ways' labels: --label kept there, as before."""
        if image.target or not image.labels:
            return [a for k, v in image.labels.items() for a in ("--label", f"{k}={v}")]
        path = Path(self._file(f"{image.name}.labels.Containerfile"))
        path.write_text(_label_step(image) + "\n")
        return ["-f", str(path)]

    def _output_argv(self, image: ImagePlan) -> list[str]:
        """Where the build goes: tagged with its refs (the ID in an iidfile), or for several
        platforms one image each, collected in a manifest list (an iidfile holds only one ID)."""
        if image.multi_platform:
            return ["--platform", ",".join(image.platforms), "--manifest", image.refs[0]]
        argv = ["--iidfile", self.iidfile(image), *(a for ref in image.refs for a in ("-t", ref))]
        return argv + (["--platform", image.platforms[0]] if image.platforms else [])

    def _cache_flags(self, image: ImagePlan, no_cache: bool, cache: bool) -> list[str]:
        if no_cache:
            return ["--no-cache"]
        return self.cache_argv(image.cache) if cache and image.cache else []

    def cache_argv(self, cache: ImageRef) -> list[str]:
        # Plain HTTP and a loopback registry come from registries.conf (write_config); a private
        # CA from --cert-dir, as for the push. Credentials only through the authfile.
        argv = ["--cache-from", str(cache), "--cache-to", str(cache)]
        if self.settings.get("MOLTBUILD_REGISTRY_CA"):
            argv += ["--cert-dir", self._file("certs")]
        return argv

    def push_argv(self, target: PushTarget, tag: str, digestfile: str) -> list[str]:
        dest = f"docker://{target.ref.with_tag(tag)}"
        common = ["--authfile", self._file("auth.json"), *self.tls_argv(target.ref.host)]
        common += ["--digestfile", digestfile]
        if len(target.platforms) > 1:
            return [*self.global_argv(), "manifest", "push", "--all", *common, target.source, dest]
        return [*self.global_argv(), "push", *common, target.source, dest]

    # -- actions -------------------------------------------------------------------------------

    def write_config(self, run: RunSpec) -> None:
        workdir = run.workdir
        (workdir / "auth.json").write_text('{"auths": {}}')
        (workdir / "auth.json").chmod(0o600)
        (workdir / "registries.conf").write_text(
            registries_conf(run.mirror, self._plain_http_hosts(run.mirror, list(run.logins)))
        )
        ca = self.settings.get("MOLTBUILD_REGISTRY_CA")
        if ca:
            (workdir / "certs").mkdir(exist_ok=True)
            shutil.copy(ca, workdir / "certs" / "ca.crt")

    def _plain_http_hosts(self, mirror: str | None, targets: Sequence[str] = ()) -> list[str]:
        """Hosts `bud` may reach over plain HTTP: the listed ones, and a loopback mirror or push
        target (the registry layer cache is read and written during `bud`)."""
        hosts = list(self.settings.insecure_registries)
        for host in [mirror.split("/", 1)[0] if mirror else "", *targets]:
            if host and host not in hosts and self.settings.allows_plain_http(host):
                hosts.append(host)  # a loopback registry needs no listing
        return hosts

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
        name = str(parse_base(base))
        argv = [
            *self.global_argv(),
            "pull",
            "--policy",
            "always" if self._base_moved(name, source) else "missing",
            "--authfile",
            self._file("auth.json"),
            name,
        ]
        self.runner.run(
            argv,
            env=self.env(),
            timeout=1800,
            what=f"pulling base image {base} from {source}",
            echo=True,
            idle_timeout=self.idle_timeout,
        )

    def _base_moved(self, name: str, source: str) -> bool:
        """Whether the local copy of base `name` is not what `source` serves now (buildah 1.28
        has no `--policy newer`); False without a local copy (pulled anyway) or an answer."""
        if self.dry_run:
            return False
        listed = self.runner.run(
            [*self.global_argv(), "images", "--json", name], env=self.env(), check=False, timeout=120
        )
        try:
            local = {str(i.get("digest")) for i in json.loads(listed.stdout)} if listed.ok else set()
        except (ValueError, AttributeError):
            local = set()
        served = self.base_served(source) if local else None
        if served is None or local & served.digests():
            return False
        self.runner.say(
            f"base {name}: {source} now serves {served.digest[:19]}, the local copy is "
            f"{sorted(local)[0][:19]}: pulling it again"
        )
        return True

    def build(self, image: ImagePlan, *, no_cache: bool, log: JobLog) -> str:
        cache = None if no_cache else image.cache
        try:
            idle = self.idle_timeout * layercache.IDLE_FACTOR if cache else None
            self._bud(image, no_cache=no_cache, cache=True, log=log, idle=idle)
        except CommandError as exc:
            reason = layercache.failure(exc.tail) if cache else ""
            if not reason:
                raise
            # Layers already built stay in local storage: the second `bud` reuses them.
            self.runner.warn(
                f"{log.prefix}registry layer cache {cache}: {reason}; building again without it "
                "(a cache failure never fails the build; MOLTBUILD_REGISTRY_CACHE=0 turns the cache off)"
            )
            self._bud(image, no_cache=False, cache=False, log=log)
            return f"not used: {reason}"
        if cache is None or self.dry_run:
            return ""
        return layercache.outcome(log.path, str(cache))

    def _bud(
        self, image: ImagePlan, *, no_cache: bool, cache: bool, log: JobLog, idle: float | None = None
    ) -> None:
        if image.multi_platform:
            # `bud --manifest NAME` adds to whatever NAME is: a list from an earlier run (entries
            # twice) or a native build's image ("not a manifest list"). Start from no NAME at all.
            name = image.refs[0]
            for verb in (("manifest", "rm"), ("rmi",)):
                self.runner.run([*self.global_argv(), *verb, name], env=self.env(), check=False, timeout=120)
        root, workdir = self.settings.project_root, Path(self._file("."))
        with secret_files(image.secrets, self.runner, root, workdir, dry_run=self.dry_run) as secrets:
            argv = self.build_argv(image, no_cache=no_cache, cache=cache, secrets=secrets)
            if self.dry_run and image.labels and not image.target:  # what the second -f file says
                self.runner.say(f"{log.prefix}+ {image.name}.labels.Containerfile: {_label_step(image)}")
            self.runner.stream(
                argv,
                prefix=log.prefix,
                env=self.env(),
                log_path=log.path,
                what=f"buildah build of {image.name}",
                idle_timeout=idle,
            )

    def built_id(self, image: ImagePlan) -> str | None:
        if image.multi_platform:
            return image.refs[0]  # the manifest list, by its local name
        path = Path(self.iidfile(image))
        return path.read_text().strip() if path.is_file() else None

    def runtime(self) -> ContainerRuntime:
        # podman shares buildah's storage; the two ulimits: podman's defaults exceed some VMs' hard limits
        argv = ["podman", *self.global_argv()[1:]]
        limits = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
        return ContainerRuntime(self.runner, argv, run_flags=limits, env=self.env())

    def working_containers(self) -> set[str]:
        res = self.runner.run(
            [*self.global_argv(), "containers", "--json"], env=self.env(), mutates=False, timeout=120
        )
        rows = json.loads(res.stdout or "[]") or []
        return {row["id"] for row in rows if row.get("builder", True)}

    def remove_containers(self, ids: set[str]) -> None:
        self.runner.run([*self.global_argv(), "rm", *sorted(ids)], env=self.env(), check=False, timeout=300)

    def state_dir(self) -> Path:
        return Path(self.storage.path) / "moltbuild"  # beside the images it describes, gone with them

    @property
    def mounts_images(self) -> bool:  # type: ignore[override]
        return os.geteuid() == 0  # rootless podman mounts only inside `podman unshare`

    @contextlib.contextmanager
    def mounted_image(self, image_id: str) -> Iterator[Path]:
        rt = self.smoke_runtime
        where = rt("image", "mount", image_id, timeout=120).stdout.strip()
        try:
            yield Path(where)
        finally:
            rt("image", "unmount", image_id, check=False, timeout=120)

    def push_once(self, target: PushTarget, tag: str, log: JobLog) -> str:
        digestfile = Path(self._file(f"{target.name}.digest"))
        digestfile.unlink(missing_ok=True)
        self.runner.stream(
            self.push_argv(target, tag, str(digestfile)),
            prefix=log.prefix,
            env=self.env(),
            log_path=log.path,
            what=f"push of {target.ref.with_tag(tag)}",
            idle_timeout=self.idle_timeout,
        )
        return "" if self.dry_run else digestfile.read_text().strip()


def _label_step(image: ImagePlan) -> str:
    """moltbuild's labels as one LABEL instruction (values quoted, `$` escaped)."""
    return "LABEL " + " ".join(f"{_quoted(k)}={_quoted(v)}" for k, v in image.labels.items())
