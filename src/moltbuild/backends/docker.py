"""Docker CLI against whatever daemon DOCKER_HOST names (BuildKit/buildx when present)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from moltbuild.backends.contract import ARCHES, BackendStatus, JobLog, PushTarget, RunSpec
from moltbuild.backends.local import LocalBackend
from moltbuild.backends.secrets import secret_argv, secret_files
from moltbuild.errors import CommandError, ConfigError, MoltbuildError
from moltbuild.plan.bases import parse_base
from moltbuild.refs import is_loopback
from moltbuild.settings import truthy
from moltbuild.smoke.run import ContainerRuntime

if TYPE_CHECKING:
    from moltbuild.plan.planner import ImagePlan
    from moltbuild.registry.auth import Credentials

PUSHED_DIGEST_RE = re.compile(r"digest: (sha256:[0-9a-f]{64})")
CACHED_RE = re.compile(r"^(?:\[\w[\w.-]*\] )?#\d+ CACHED$", re.M)  # BuildKit's plain progress
NO_REGISTRY_CACHE = (
    "the classic docker builder keeps layers in the daemon only; the registry layer cache needs "
    "BuildKit (docker buildx, or DOCKER_BUILDKIT=1 with a docker CLI before 23), buildah or kaniko"
)
INLINE_TAG = "buildkit"  # REPO/cache:buildkit: the last image pushed, carrying BuildKit's inline cache
NESTED_FIX = (
    "use the buildah backend (MOLTBUILD_BACKEND=buildah or --backend buildah), "
    "or --force to try docker anyway"
)


def _image_options(image: ImagePlan) -> list[str]:
    """Tags, build args, labels, target and platforms of one image, as `docker build` options."""
    argv = [a for ref in image.refs for a in ("-t", ref)]
    argv += [a for k, v in image.build_args.items() for a in ("--build-arg", f"{k}={v}")]
    argv += [a for k, v in image.labels.items() for a in ("--label", f"{k}={v}")]
    if image.target:
        argv += ["--target", image.target]
    if image.platforms:
        argv += ["--platform", ",".join(image.platforms)]
    if image.timestamp:  # BuildKit (buildx) stamps layers and history with it; the legacy builder ignores it
        argv += ["--build-arg", f"SOURCE_DATE_EPOCH={image.timestamp}"]
    return argv


class DockerBackend(LocalBackend):
    name = "docker"
    binary = "docker"

    def daemon_info(self) -> tuple[str, str] | str:
        """(server version, storage driver) when a daemon answers, else the error text."""
        try:
            res = self.runner.run(
                [self.binary, "info", "--format", "{{.ServerVersion}}|{{.Driver}}"],
                mutates=False,
                timeout=15,
            )
        except CommandError as exc:
            return (exc.tail.strip().splitlines() or [str(exc)])[-1]
        except MoltbuildError as exc:
            return str(exc)
        version, _, driver = res.stdout.strip().partition("|")
        if not version:
            return (res.stderr.strip().splitlines() or ["daemon did not answer"])[-1]
        return version, driver

    def status(self) -> BackendStatus:
        if not self.tool_path():
            return BackendStatus(
                self.name,
                False,
                False,
                "docker CLI not installed",
                "install Docker, or use buildah (invoke setup)",
            )
        info = self.daemon_info()
        host = self.runner.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        if isinstance(info, str):
            return BackendStatus(
                self.name,
                True,
                False,
                f"no Docker daemon answers at {host}: {info}",
                "start Docker or set DOCKER_HOST; in a devpod use buildah",
            )
        version, driver = info
        if self.storage.nested:
            return BackendStatus(
                self.name,
                True,
                False,
                f"daemon {version} answers, but {self.storage.path} is on nested overlay: "
                "docker build fails with 'mount source: \"overlay\" ... invalid argument'",
                NESTED_FIX,
            )
        return BackendStatus(self.name, True, True, f"daemon {version} at {host}, storage driver {driver}")

    def native_platform(self) -> str:
        res = self.runner.run(
            [self.binary, "info", "--format", "{{.OSType}}/{{.Architecture}}"],
            mutates=False,
            check=False,
            timeout=15,
        )
        os_type, _, arch = res.stdout.strip().partition("/")
        if not res.ok or not arch:
            return super().native_platform()
        return f"{os_type}/{ARCHES.get(arch, arch)}"

    @cached_property
    def has_buildx(self) -> bool:
        res = self.runner.run([self.binary, "buildx", "version"], mutates=False, check=False, timeout=15)
        return res.ok

    @cached_property
    def buildkit(self) -> bool:
        """BuildKit builds: through buildx, or the daemon's own with DOCKER_BUILDKIT=1 (CLI < 23)."""
        return self.has_buildx or truthy(
            self.runner.environ.get("DOCKER_BUILDKIT"), "DOCKER_BUILDKIT", "environment"
        )

    def check_images(self, images: Sequence[ImagePlan]) -> None:
        """RUN --mount needs BuildKit: buildx, or a CLI before 23 with DOCKER_BUILDKIT=1 (from 23 on,
        DOCKER_BUILDKIT=1 without buildx is refused by the CLI itself)."""
        super().check_images(images)
        needing = [image.name for image in images if image.run_mounts]
        if not needing or self.has_buildx:
            return
        argv = [self.binary, "version", "--format", "{{.Client.Version}}"]
        res = self.runner.run(argv, mutates=False, check=False, timeout=15)
        major = res.stdout.strip().split(".", 1)[0]
        if major.isdigit() and int(major) >= 23:
            raise ConfigError(
                f"{needing[0]}: RUN --mount (build secrets, cache mounts) needs BuildKit and this docker "
                f"CLI ({res.stdout.strip()}) has no buildx; install buildx, or use --backend buildah"
            )

    # -- argv, kept pure -----------------------------------------------------------------------

    def iidfile(self, image: ImagePlan) -> str:
        return self._file(f"{image.name}.iid")

    def build_argv(
        self,
        image: ImagePlan,
        *,
        no_cache: bool = False,
        buildx: bool = False,
        cache: bool = False,
        secrets: Mapping[str, str] | None = None,
    ) -> list[str]:
        """`docker build`; with `cache` (BuildKit, a planned `image.cache`) it reads REPO/cache:buildkit
        and writes the inline cache into the image (pushed there after the image, `export_cache`)."""
        argv = [
            self.binary,
            *(["buildx", "build", "--load"] if buildx else ["build"]),
            "--iidfile",
            self.iidfile(image),
            "-f",
            str(image.dockerfile),
        ]
        argv += _image_options(image)
        if no_cache:
            argv.append("--no-cache")
        elif cache and image.cache:
            argv += ["--cache-from", f"{image.cache}:{INLINE_TAG}", "--build-arg", "BUILDKIT_INLINE_CACHE=1"]
        return [*argv, *secret_argv(secrets or {}), str(image.context)]

    def env(self) -> dict[str, str]:
        return {"DOCKER_CONFIG": self._file("docker-config")}

    # -- actions -------------------------------------------------------------------------------

    def write_config(self, run: RunSpec) -> None:
        config = run.workdir / "docker-config"
        config.mkdir(mode=0o700, exist_ok=True)
        (config / "config.json").write_text('{"auths": {}}')
        # TLS trust and plain-HTTP registries are daemon settings; the CLI cannot pass them.
        ca = self.settings.get("MOLTBUILD_REGISTRY_CA")
        if ca:
            self.runner.say(
                f"note: docker reads registry CAs from the daemon; copy {ca} to "
                "/etc/docker/certs.d/HOST:PORT/ca.crt on the daemon's machine"
            )
        for host in self.settings.insecure_registries:
            if not is_loopback(host):
                self.runner.say(
                    f"note: docker pulls/pushes {host} over HTTP only if the daemon lists "
                    "it in insecure-registries (daemon.json)"
                )
        home = Path(self.runner.environ.get("HOME") or Path.home())
        plugins = Path(self.runner.environ.get("DOCKER_CONFIG") or home / ".docker") / "cli-plugins"
        if plugins.is_dir():  # keep buildx & co. visible with the private config dir
            (config / "cli-plugins").symlink_to(plugins)

    def login(self, host: str, creds: Credentials) -> None:
        self.runner.run(
            [self.binary, "login", "--username", creds.username, "--password-stdin", host],
            stdin=creds.password,
            env=self.env(),
            timeout=120,
            what=f"docker login to {host}",
        )

    def pull_base(self, base: str, source: str) -> None:
        self.runner.run(
            [self.binary, "pull", source],
            env=self.env(),
            timeout=1800,
            what=f"pulling base image {base} from {source}",
            echo=True,
            idle_timeout=self.idle_timeout,
        )
        canonical = str(parse_base(base))
        if source != canonical:  # the Dockerfile names the Docker Hub ref; make it resolve locally
            self.runner.run([self.binary, "tag", source, canonical], env=self.env(), timeout=60)

    def build(self, image: ImagePlan, *, no_cache: bool, log: JobLog) -> str:
        if image.multi_platform:
            raise ConfigError(
                f"{image.name}: the docker backend builds one platform at a time here; "
                "use --backend buildah for multi-platform images"
            )
        cache = image.cache is not None and not no_cache
        # RUN --mount is BuildKit's (the classic builder of a CLI before 23 ignores it: a cache's
        # files would land in the layer): without buildx, the daemon's own BuildKit
        env = (
            {**self.env(), "DOCKER_BUILDKIT": "1"} if image.run_mounts and not self.has_buildx else self.env()
        )
        root, workdir = self.settings.project_root, Path(self._file("."))
        with secret_files(image.secrets, self.runner, root, workdir, dry_run=self.dry_run) as secrets:
            buildkit_cache = cache and self.buildkit
            argv = self.build_argv(
                image, no_cache=no_cache, buildx=self.has_buildx, cache=buildkit_cache, secrets=secrets
            )
            self.runner.stream(
                argv, prefix=log.prefix, env=env, log_path=log.path, what=f"docker build of {image.name}"
            )
        if not cache:
            return ""
        if not self.buildkit:
            self.runner.say(f"{log.prefix}note: {NO_REGISTRY_CACHE} ({image.cache} is not read or written)")
            return f"not used: {NO_REGISTRY_CACHE}"
        text = (
            log.path.read_text(encoding="utf-8", errors="replace") if log.path and log.path.is_file() else ""
        )
        hits = len(CACHED_RE.findall(text))
        return f"{hits} step(s) CACHED, inline cache {image.cache}:{INLINE_TAG}"

    def export_cache(self, image: ImagePlan, digest: str | None, cache: str, log: JobLog) -> str:
        """The pushed image, carrying BuildKit's inline cache, is copied to REPO/cache:buildkit in the
        registry (blobs mounted from REPO, one manifest PUT; no second docker push, whose retries
        on a refusal take a minute); a refusal only warns."""
        if not cache or cache.startswith("not used") or image.cache is None:
            return cache
        ref = f"{image.cache}:{INLINE_TAG}"
        if self.dry_run or not digest:
            self.runner.say(
                f"{log.prefix}+ copy {image.ref}@<digest> to {ref} in the registry (the inline cache)"
            )
            return cache
        try:
            client = self.registry(image.cache.host)
            with client.operation(f"copy {image.ref.repository}@{digest[:19]} to {ref}"):
                client.copy(image.ref.repository, digest, image.cache.repository, INLINE_TAG)
        except MoltbuildError as exc:
            reason = exc.message.splitlines()[0][:200]
            self.runner.warn(
                f"{log.prefix}registry layer cache {ref}: not written ({reason}); the image itself is "
                "pushed (a cache failure never fails the build; MOLTBUILD_REGISTRY_CACHE=0 turns it off)"
            )
            return f"not written: {reason}"
        self.runner.say(f"{log.prefix}inline layer cache copied to {ref}")
        return cache

    def built_id(self, image: ImagePlan) -> str | None:
        path = Path(self.iidfile(image))
        return path.read_text().strip() if path.is_file() else None

    def runtime(self) -> ContainerRuntime:
        return ContainerRuntime(self.runner, [self.binary], env=self.env())

    def state_dir(self) -> Path:
        # The daemon's data root is not ours to write: one ledger per daemon in the user's cache.
        daemon = self.runner.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        home = Path(self.runner.environ.get("HOME") or Path.home())
        cache = Path(self.runner.environ.get("XDG_CACHE_HOME") or home / ".cache")
        return cache / "moltbuild" / f"docker-{hashlib.sha256(daemon.encode()).hexdigest()[:12]}"

    def push_once(self, target: PushTarget, tag: str, log: JobLog) -> str:
        # docker pushes names, not IDs: name exactly the image this run built, then push that name.
        ref = str(target.ref.with_tag(tag))
        self.runner.run([self.binary, "tag", target.source, ref], env=self.env(), timeout=60, echo=True)
        res = self.runner.stream(
            [self.binary, "push", ref],
            prefix=log.prefix,
            env=self.env(),
            log_path=log.path,
            what=f"push of {ref}",
            idle_timeout=self.idle_timeout,  # the CLI reads the daemon's progress: silence is a stall
        )
        if self.dry_run:
            return ""
        found = PUSHED_DIGEST_RE.search(res.stdout)
        if found:
            return found.group(1)
        raise MoltbuildError(f"{target.name}: pushed {ref}, but docker printed no digest")
