"""What buildah and docker share: build a local image, push it once by image ID, then add the
other tags in the registry by manifest PUT (no re-upload, no second push)."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import re
import shutil
import time
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from moltbuild.backends.contract import (
    Backend,
    BasePull,
    Built,
    ImageResult,
    JobLog,
    PushTarget,
    RunSpec,
    retry_transient,
)
from moltbuild.backends.imagestore import ImageStore, Owner
from moltbuild.backends.secrets import problems as secret_problems
from moltbuild.errors import CommandError, ConfigError, JobError, MoltbuildError, RegistryError
from moltbuild.refs import ImageRef
from moltbuild.registry.auth import Registries
from moltbuild.registry.client import Manifest, RegistryClient
from moltbuild.registry.tags import echo_puts, put_and_confirm
from moltbuild.smoke import oci
from moltbuild.smoke.run import ContainerRuntime, run_smoke, stop_all
from moltbuild.system.processes import IDLE_CUT

if TYPE_CHECKING:
    from moltbuild.plan.planner import ImagePlan
    from moltbuild.registry.auth import Credentials

MIRROR_HINT = (
    "set MOLTBUILD_BASE_MIRROR=HOST[:PORT]/PREFIX to pull Docker Hub bases through a mirror you can reach"
)


class LocalBackend(Backend):
    keeps_images = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.workdir: Path | None = None
        self._logins: dict[str, Credentials | None] = {}
        self._registries: Registries | None = None  # the run's, from open()
        self._active = contextlib.ExitStack()
        self._opened = False
        self._built: list[str] = []
        self._report: Path | None = None
        self._before: set[str] | None = None  # builder containers there when this run began

    # -- what each local builder provides ------------------------------------------------------

    @abstractmethod
    def write_config(self, run: RunSpec) -> None:
        """Per-run config files (auth, registries, CA) in `self.workdir`."""

    @abstractmethod
    def login(self, host: str, creds: Credentials) -> None: ...

    @abstractmethod
    def pull_base(self, base: str, source: str) -> None: ...

    @abstractmethod
    def build(self, image: ImagePlan, *, no_cache: bool, log: JobLog) -> str:
        """Build `image` into the local store; returns what it did with the registry layer cache
        ('' when it used none)."""

    def export_cache(self, image: ImagePlan, digest: str | None, cache: str, log: JobLog) -> str:
        """After a good push: write what the registry layer cache needs beyond the build itself
        (docker's inline cache); returns the cache outcome, `cache` when there is nothing to add.
        A failure here warns and never fails the image."""
        return cache

    @abstractmethod
    def built_id(self, image: ImagePlan) -> str | None:
        """What `push_once` pushes: the image ID, or the manifest list's local name."""

    @abstractmethod
    def runtime(self) -> ContainerRuntime:
        """What runs the built image for the smoke check (podman on buildah's storage, docker)."""

    @abstractmethod
    def state_dir(self) -> Path:
        """Where the ledger of images this tool created in the local store lives."""

    def working_containers(self) -> set[str]:
        """The builder's working containers in the store (buildah's; docker leaves none)."""
        return set()

    def remove_containers(self, ids: set[str]) -> None:
        """Remove working containers (and unmount them)."""

    @abstractmethod
    def push_once(self, target: PushTarget, tag: str, log: JobLog) -> str:
        """Upload `target.source` as `target.ref:tag`; the registry's digest ('' in a dry run)."""

    # -- the shared job ------------------------------------------------------------------------

    @cached_property
    def native(self) -> str:
        return self.native_platform()

    def _file(self, name: str) -> str:
        if self.workdir is None:
            raise MoltbuildError(f"{self.name} backend used before open(): a bug, please report it")
        return str(self.workdir / name)

    def store(self) -> ImageStore:
        owner = Owner.of(self.settings.project_root, self._report)
        return ImageStore(self.runtime(), self.state_dir(), owner)

    def prepare(self, run: RunSpec) -> None:
        """Config files only: enough for local-store commands outside a build (`invoke clean`)."""
        self.workdir = run.workdir
        self._report = run.report
        self.write_config(run)

    def check_images(self, images: Sequence[ImagePlan]) -> None:
        """Every build secret's value can be read (a dry run warns when building instead)."""
        if self.dry_run:
            return
        for image in images:
            missing = secret_problems(image.secrets, self.runner.environ, self.settings.project_root)
            if missing:
                where = f"[tool.moltbuild.images.{image.name}] secrets"
                raise ConfigError(f"{image.name}: {missing[0]} ({where})")

    def open(self, run: RunSpec) -> None:
        self.prepare(run)
        self._logins = dict(run.logins)
        self._registries = run.registries
        if not self.dry_run:  # this run has the store to itself until close()
            self._active.enter_context(self.store().exclusive(run.purpose, self.runner.say))
            self._opened = True
            self.reap_leftovers()
            with contextlib.suppress(MoltbuildError):  # no snapshot: nothing is ever removed
                self._before = self.working_containers()
                self.store().begin_run(self._before)
        for host, creds in run.logins.items():
            if creds:
                self.login(host, creds)
        if run.bases:  # once each, before any build, all at once
            with cf.ThreadPoolExecutor(max_workers=len(run.bases)) as pool:
                for error in pool.map(lambda item: self._pull(run, *item), run.bases.items()):
                    if error:
                        raise error

    def reap_leftovers(self) -> list[str]:
        """What runs killed with SIGKILL left: builder containers that appeared after such a run
        began, smoke containers whose owner is gone. Call it holding the store's run lock."""
        store, gone = self.store(), []
        try:
            left, markers = store.left_by_dead_runs(self.working_containers())
            if left:
                self.remove_containers(left)
                gone += sorted(left)
            for marker in markers:
                marker.unlink(missing_ok=True)
            runtime = self.runtime()
            gone += runtime.reap_smoke() if shutil.which(runtime.argv[0]) else []
        except MoltbuildError as exc:
            self.runner.say(f"note: leftover cleanup skipped: {exc.message.splitlines()[0]}")
        if gone:
            self.runner.say(f"storage: removed {len(gone)} container(s) a killed moltbuild run left")
        return gone

    def _end_run(self) -> None:
        """Working containers this run's failed or interrupted builds left go; the marker too."""
        if self._before is None:
            return
        try:
            left = self.working_containers() - self._before
            if left:
                self.remove_containers(left)
                self.runner.say(f"storage: removed {len(left)} working container(s) of failed builds")
            self.store().end_run()
        except MoltbuildError as exc:
            self.runner.say(f"note: container cleanup skipped: {exc.message.splitlines()[0]}")
        self._before = None

    def tidy(self, *, ok: bool, built: Sequence[ImagePlan]) -> None:
        """Record what this run created in the store's ledger; after a good run, prune."""
        if self.dry_run or not self._opened:
            return
        self._end_run()
        try:
            removed = self._record_and_prune(ok, built)
        except MoltbuildError as exc:  # hygiene never fails a build
            self.runner.say(f"note: storage cleanup skipped: {exc.message.splitlines()[0]}")
            return
        if removed:
            self.runner.say(
                f"storage: removed {len(removed)} image(s) this tool created and nothing uses any more "
                "(superseded builds, unused intermediates); MOLTBUILD_KEEP_IMAGES=1 keeps them"
            )

    def _record_and_prune(self, ok: bool, built: Sequence[ImagePlan]) -> Sequence[str]:
        """The ledger updated; after a good run, what the store removed."""
        store = self.store()
        built_ids = {b.removeprefix("sha256:") for b in self._built}
        if built_ids <= store.ledger():
            store.claim(built_ids)  # this checkout needs them too
            return ()  # every build was a full cache hit: no image is new, none superseded
        images = store.inventory()
        store.record(images, self._built)
        if not ok or not built or self.settings.flag("MOLTBUILD_KEEP_IMAGES"):
            return ()  # a failed run's intermediate images are the layer cache of the retry
        keep = {img.ref.name: set(img.refs) for img in built if not img.multi_platform}
        return store.prune(supersede=keep, images=images)

    def close(self) -> None:
        """End the run (its leftover working containers, its marker), release the store's run lock."""
        try:
            if self._opened and not self.dry_run:
                self._end_run()
        finally:
            self._active.close()

    def _storage_full(self, output: str) -> str:
        """The fix when a tool ran out of disk in the image store ('' when it did not)."""
        if not re.search(r"no space left on device|disk quota exceeded", output, re.I):
            return ""
        return (
            f"the image storage at {self.storage.path} is full: free space there (`invoke clean`) "
            "or set MOLTBUILD_STORAGE_ROOT to a disk with room"
        )

    def _pull(self, run: RunSpec, base: str, pull: BasePull) -> JobError | None:
        try:
            self.pull_base(base, pull.source)
        except CommandError as exc:
            last = (exc.tail.strip().splitlines() or ["no output"])[-1][:200]
            via = f" through the mirror as {pull.source}" if run.mirror and pull.source != base else ""
            host = pull.source.split("/", 1)[0]
            if self._storage_full(exc.tail):
                hint = self._storage_full(exc.tail)
            elif "server gave HTTP response to HTTPS client" in exc.tail:
                hint = f"{host} speaks plain HTTP: add it to MOLTBUILD_INSECURE_REGISTRIES"
            elif re.search(r"x509|certificate|tls:", exc.tail, re.I):
                hint = f"TLS to {host} failed: set MOLTBUILD_REGISTRY_CA to its CA bundle"
            else:
                hint = f"check that {pull.source} exists in the mirror" if via else MIRROR_HINT
            return JobError(
                f"cannot pull base image {base}{via} (needed by {', '.join(pull.users)}): {last}; {hint}"
            )
        return None

    def produce(
        self, image: ImagePlan, *, push: bool, no_cache: bool, log: JobLog, built: Built | None = None
    ) -> ImageResult:
        start = time.monotonic()
        try:
            cache = self.build(image, no_cache=no_cache, log=log)
        except MoltbuildError as exc:
            full = self._storage_full(getattr(exc, "tail", ""))
            raise JobError(_with_tail(exc) + (f"\n{full}" if full else "")) from None
        image_id = self.built_id(image)
        if image_id and not image.multi_platform:
            self._built.append(image_id)  # recorded in the store's ledger by tidy()
        platforms = image.platforms or (self.native,)
        if built is not None and push and image_id and not image.multi_platform:
            built(image_id)  # work that needs only the image (its SBOM) starts beside the check
        smoke = self.smoke(image, image_id, log)
        if not push:
            return ImageResult(
                image_id, platforms, time.monotonic() - start, log.path, smoke=smoke, cache=cache
            )
        target = PushTarget(image.name, image.ref, image.tags, image_id or image.refs[0], image.platforms)
        try:
            pushed = self.push_built(target, log=log)
        except MoltbuildError as exc:
            raise JobError(_with_tail(exc), image_id=image_id) from None
        cache = self.export_cache(image, pushed.digest, cache, log)
        return replace(
            pushed,
            image_id=image_id,
            platforms=platforms,
            duration_s=time.monotonic() - start,
            smoke=smoke,
            cache=cache,
        )

    @cached_property
    def smoke_runtime(self) -> ContainerRuntime:
        return self.runtime()

    def cancel(self) -> None:
        """Ctrl-C / SIGTERM: smoke containers are removed first, then every child process stops."""
        stop_all()
        super().cancel()

    def smoke(self, image: ImagePlan, image_id: str | None, log: JobLog) -> str:
        """Start the image and check it before anything is pushed; a failure is a JobError."""
        if image.smoke is None:
            return oci.skipped(self.settings)
        if image.multi_platform or not image_id:
            return "skipped: a multi-platform list is not run locally"
        if self.dry_run:
            self.runner.say(
                f"{log.prefix}+ smoke check: run {image.name}, wait for its HEALTHCHECK, GET its probe paths"
            )
            return ""
        runtime = self.smoke_runtime  # one per run: it keeps the OCI runtime that works here
        if not shutil.which(runtime.argv[0]):  # a push was refused before building (flows.build)
            note = f"skipped: {runtime.argv[0]} is not installed (invoke setup)"
            self.runner.say(f"{log.prefix}smoke: {note}")
            return note
        try:
            outcome = run_smoke(runtime, image.name, image_id, image.smoke, self.runner.say, log.prefix)
        except JobError as exc:
            raise JobError(
                exc.message, smoke=f"failed: {exc.message.removeprefix('smoke check failed: ')}"
            ) from None
        self.runner.say(f"{log.prefix}smoke: {outcome.summary}")
        return outcome.summary

    def push_built(self, target: PushTarget, *, log: JobLog) -> ImageResult:
        start = time.monotonic()
        first, *rest = target.tags
        digest = retry_transient(
            lambda: self.push_once(target, first, log),
            say=lambda line: self.runner.say(log.prefix + line),
            before_retry=lambda exc: self._still_answering(target.ref, exc),
        )
        size = self.tag_remote(target.ref, first, digest, rest, log)
        return ImageResult(
            target.source,
            target.platforms or (self.native,),
            time.monotonic() - start,
            log.path,
            digest or None,
            target.tags,
            size_bytes=size,
        )

    def tag_remote(self, ref: ImageRef, first: str, digest: str, tags: list[str], log: JobLog) -> int | None:
        """Every other tag is a manifest PUT of what was just pushed; each must serve `digest`.
        Returns the pushed image's size, from the one manifest read that the PUTs reuse."""
        if self.dry_run:
            refs = [ref.with_tag(tag) for tag in tags]
            echo_puts(self.runner.say, refs, f"the manifest pushed as {first}", prefix=log.prefix)
            return None
        client = self.registry(ref.host)
        found = client.manifest(ref.repository, digest, method="GET")
        if found is None:
            raise RegistryError(f"{ref.with_tag(first)} was pushed, but the registry has no {digest}")
        size = client.image_size(ref.repository, found)
        if not tags:
            return size
        put_and_confirm(client, ref, tags, digest=digest, manifest=found)
        self.runner.say(f"{log.prefix}tagged {', '.join(tags)} in the registry at {digest[:19]}")
        return size

    def _still_answering(self, ref: ImageRef, exc: CommandError) -> None:
        """A push cut for moving no byte is tried again only when the registry still answers
        (within one MOLTBUILD_IDLE_TIMEOUT): a frozen registry ends the run, naming it."""
        if IDLE_CUT in exc.tail:
            self.registry(ref.host).answering(f"push of {ref} stalled; is the registry still there?")

    def base_served(self, source: str) -> Manifest | None:
        """What a base's source serves now (its tag asked once per run); None when it is pinned by
        digest or the registry cannot say (noted)."""
        try:
            ref = ImageRef.parse(source, "base image", default_tag="latest")
            host = "registry-1.docker.io" if ref.on_docker_hub else ref.host  # Docker Hub's API host
            found = None if ref.digest else self.registry(host).resolved(ref.repository, ref.reference)
        except MoltbuildError as exc:
            first = exc.message.splitlines()[0][:200]
            self.runner.say(f"note: cannot ask what {source} serves now ({first}); a local copy is kept")
            return None
        return found

    def registry(self, host: str) -> RegistryClient:
        """The run's client for `host` (one per host per run, with this run's login)."""
        if self._registries is None:
            raise TypeError(f"{type(self).__name__}.open() needs RunSpec.registries, the run's clients")
        return self._registries.client(host, self._logins.get(host))


def _with_tail(exc: MoltbuildError) -> str:
    tail = getattr(exc, "tail", "")
    return exc.message + (f"\n{tail}" if tail and tail not in exc.message else "")
