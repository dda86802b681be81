"""Kaniko: one Job per image in the cluster builds and pushes it; the context is streamed into
the Job's init container (tar over exec), the digest comes back as the termination message and
is read back from the registry. Jobs are deleted when the image is done, failed or interrupted."""

from __future__ import annotations

import io
import shlex
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from moltbuild.backends.contract import Backend, BackendStatus, Built, ImageResult, JobLog, RunSpec
from moltbuild.backends.kaniko_job import executor_args, job_manifest, job_name, timeout_of
from moltbuild.errors import ConfigError, JobError, MoltbuildError
from moltbuild.k8s.cluster import Cluster, ClusterError
from moltbuild.k8s.kaniko import SECRET_NAME, receive, render
from moltbuild.plan.inputs import context_tarball
from moltbuild.refs import DIGEST_RE

if TYPE_CHECKING:
    from moltbuild.plan.planner import ImagePlan

T = TypeVar("T")
KUBECONFIG_FIX = "get a kubeconfig for the cluster (KUBECONFIG, MOLTBUILD_KUBE_CONTEXT)"
UNREACHABLE_FIX = "check the VPN/kubeconfig, then kubectl get ns"
SETUP_FIX = "invoke kaniko.setup"
RUNNER_FIX = (
    "an admin runs `invoke kaniko.setup` and binds you to the moltbuild-kaniko-runner Role "
    "(k8s/kaniko/README.md)"
)
UNSCHEDULABLE_GRACE = 15.0
PULL_FAILURES = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError"}


class KanikoBackend(Backend):
    name = "kaniko"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._run: RunSpec | None = None
        self._live: set[str] = set()
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._pending: dict[str, float] = {}  # pod -> when it was first seen unschedulable

    @cached_property
    def cluster(self) -> Cluster:
        return Cluster(
            context=self.settings.get("MOLTBUILD_KUBE_CONTEXT"),
            namespace=self.settings["MOLTBUILD_KUBE_NAMESPACE"],
            environ=self.runner.environ,
        )

    @property
    def namespace(self) -> str:
        return self.cluster.namespace

    def status(self) -> BackendStatus:
        try:
            ctx = self.cluster.current_context()
            self.cluster.api  # noqa: B018  # loads the kubeconfig: is there a cluster to talk to?
        except ClusterError as exc:
            return BackendStatus(self.name, False, False, exc.message, KUBECONFIG_FIX)
        try:
            version = self.cluster.version()
        except ClusterError as exc:
            return BackendStatus(self.name, True, False, f"context {ctx}: {exc.message}", UNREACHABLE_FIX)
        where = f"cluster {version} of context {ctx}, namespace {self.namespace}"
        try:
            denied = [what for what, ok in self._rights() if ok is False]
            has_secret = self.cluster.secret_exists(SECRET_NAME)
        except ClusterError as exc:
            return BackendStatus(self.name, True, False, f"{where}: {exc.message}", RUNNER_FIX)
        if denied:
            return BackendStatus(
                self.name, True, False, f"{where}: not allowed to {', '.join(denied)}", RUNNER_FIX
            )
        if not has_secret:
            return BackendStatus(
                self.name, True, True, f"{where}; no registry Secret {SECRET_NAME} yet", SETUP_FIX
            )
        return BackendStatus(self.name, True, True, f"{where}; builds run as Kaniko Jobs")

    def _rights(self) -> list[tuple[str, bool | None]]:
        """What the build task does in the namespace, asked of the API server (RBAC)."""
        asks = [
            ("create jobs", "create", "jobs", "batch", ""),
            ("exec into pods", "create", "pods", "", "exec"),
            ("read pod logs", "get", "pods", "", "log"),
        ]
        return [
            (what, self.cluster.allowed(verb, res, group=group, subresource=sub))
            for what, verb, res, group, sub in asks
        ]

    def cancel(self) -> None:
        """Ctrl-C / SIGTERM: stop waiting and delete every Job this run started."""
        self._cancelled.set()
        super().cancel()
        with self._lock:
            live = list(self._live)
        for name in live:
            try:
                self.cluster.delete_job(name)
            except MoltbuildError as exc:
                self.runner.say(f"could not delete Job {name}: {exc.message}")

    def check_images(self, images: Sequence[ImagePlan]) -> None:
        """The kaniko executor has no build secrets: a Dockerfile that mounts one is refused before
        any Job, with what to do instead."""
        for image in images:
            if image.secret_mounts:
                raise ConfigError(
                    f"{image.name}: {image.dockerfile.name} mounts build secret {image.secret_mounts[0]!r} "
                    "(RUN --mount=type=secret) and the kaniko executor cannot mount secrets; build it "
                    "locally (--backend buildah or docker), or bake the step that needs the secret "
                    "into a base image built elsewhere (docs/secrets.md)"
                )

    def open(self, run: RunSpec) -> None:
        if self.settings.get("MOLTBUILD_REGISTRY_CA"):
            raise ConfigError(
                "MOLTBUILD_REGISTRY_CA is not passed to kaniko Jobs; unset it for --backend kaniko, or "
                "build with buildah/docker"
            )
        timeout_of(self.settings)
        self._run = run
        if self.dry_run:
            return
        needs = [host for host, creds in run.logins.items() if creds]
        if needs and not self.cluster.secret_exists(SECRET_NAME):
            raise ConfigError(
                f"namespace {self.namespace} has no Secret {SECRET_NAME} with the credentials for "
                f"{needs[0]}; fix: invoke kaniko.setup"
            )

    def produce(
        self, image: ImagePlan, *, push: bool, no_cache: bool, log: JobLog, built: Built | None = None
    ) -> ImageResult:
        if self._run is None:
            raise MoltbuildError("kaniko backend used before open(): a bug, please report it")
        start = time.monotonic()
        args = executor_args(
            image,
            push=push,
            no_cache=no_cache,
            mirror=self._run.mirror,
            insecure=self.settings.insecure_registries,
        )
        name = job_name(image)
        root = self.settings.project_root
        job = job_manifest(
            root, image, name=name, namespace=self.namespace, settings=self.settings, args=args
        )
        tarball = context_tarball(image.context, image.dockerfile)
        say = self.runner.say
        if self.dry_run:
            say(f"{log.prefix}+ create Job {name} in namespace {self.namespace}:")
            render([job], lambda text: say("\n".join(log.prefix + line for line in text.splitlines())))
            say(
                f"{log.prefix}+ exec {name}-<pod> -c context -- {shlex.join(receive(len(tarball)))} "
                f"< context.tar.gz ({len(tarball)} bytes)"
            )
            return ImageResult(None, image.platforms, 0.0, log.path)
        with self._lock:
            self._live.add(name)
        self.cluster.create_job(job)
        say(f"{log.prefix}Job {name} created in namespace {self.namespace}")
        try:
            digest = self._follow(name, tarball, log, deadline=start + timeout_of(self.settings))
        finally:
            if self.settings.flag("MOLTBUILD_KANIKO_KEEP"):
                say(f"{log.prefix}kept Job {name} (MOLTBUILD_KANIKO_KEEP)")
            else:
                self.cluster.delete_job(name)
            with self._lock:
                self._live.discard(name)
        if not push:
            return ImageResult(None, image.platforms, time.monotonic() - start, log.path)
        platforms = self._check_registry(image, digest)
        smoke = "skipped: built in the cluster; no local runtime checked it (invoke smoke --ref REF)"
        return ImageResult(None, platforms, time.monotonic() - start, log.path, digest, image.tags, smoke)

    # -- following one Job ---------------------------------------------------------------------

    def _follow(self, job: str, tarball: bytes, log: JobLog, *, deadline: float) -> str:
        wait = self._waiter(deadline)
        pod = wait(lambda: self._pod_of(job), "the Job's pod to be created").metadata.name
        wait(lambda: self._started(pod, "context", init=True), "the context container to start")
        code, out = self.cluster.exec_stdin(
            pod, "context", receive(len(tarball)), tarball, timeout=max(deadline - time.monotonic(), 1)
        )
        if code != 0:
            raise JobError(
                f"delivering the build context to {pod} failed (exit {code}): {out.strip()[-300:]}"
            )
        self.runner.say(f"{log.prefix}context delivered ({len(tarball)} bytes)")
        wait(lambda: self._started(pod, "kaniko"), "the kaniko executor to start")
        tail: deque[str] = deque(maxlen=20)
        with log.path.open("a", encoding="utf-8") if log.path else io.StringIO() as sink:
            for raw in self.cluster.logs(pod, "kaniko"):
                line = self.runner.mask(raw)
                tail.append(line)
                sink.write(line + "\n")
                self.runner.say(log.prefix + line)
        term = wait(lambda: self._terminated(pod), "the kaniko executor to finish")
        if term.exit_code != 0:
            last = "\n".join(tail)
            raise JobError(
                f"kaniko executor in {pod} failed: {term.reason or 'Error'}, exit {term.exit_code}"
                + (f"\n{last}" if last else "")
            )
        digest = (term.message or "").strip()
        if not DIGEST_RE.match(digest):
            raise JobError(f"kaniko executor in {pod} succeeded but reported no digest ({digest[:80]!r})")
        return digest

    def _waiter(self, deadline: float) -> Callable[[Callable[[], T | None], str], T]:
        timeout = timeout_of(self.settings)

        def wait(probe: Callable[[], T | None], what: str) -> T:
            delay = 0.1
            while True:
                if self._cancelled.is_set():
                    raise JobError("interrupted; the Job was deleted")
                found = probe()
                if found is not None:
                    return found
                if time.monotonic() >= deadline:
                    raise JobError(
                        f"timed out after {timeout}s waiting for {what} (MOLTBUILD_KANIKO_TIMEOUT)"
                    )
                time.sleep(min(delay, max(deadline - time.monotonic(), 0.01)))
                delay = min(delay * 1.5, 2.0)

        return wait

    def _pod_of(self, job: str) -> Any | None:
        pod = self.cluster.job_pod(job)
        if pod is None:
            self._job_problems(job)
        return pod

    def _job_problems(self, job: str) -> None:
        """A Job that cannot make its pod says why in its events (Pod Security, a quota, a missing
        ServiceAccount, an admission webhook) and its conditions: waiting would never help."""
        for event in self.cluster.events("Job", job):
            if event.reason == "FailedCreate":
                message = (event.message or "").strip()
                raise JobError(f"Job {job} cannot create its pod: {message[:400]}" + _create_hint(message))
        for cond in _job_conditions(self.cluster.job(job)):
            if cond.type == "Failed" and cond.status == "True":
                raise JobError(f"Job {job} failed: {cond.reason}: {(cond.message or '')[:300]}")

    def _unschedulable(self, pod: Any) -> None:
        """A pod the scheduler cannot place for UNSCHEDULABLE_GRACE seconds (an autoscaler may
        add a node in that time) fails naming the scheduler's reason."""
        for cond in (pod.status.conditions or []) if pod.status is not None else []:
            if cond.type == "PodScheduled" and cond.status == "False" and cond.reason == "Unschedulable":
                first = self._pending.setdefault(pod.metadata.name, time.monotonic())
                if time.monotonic() - first >= UNSCHEDULABLE_GRACE:
                    raise JobError(
                        f"pod {pod.metadata.name} cannot be scheduled: {(cond.message or '')[:300]} "
                        "(the executor requests cpu 500m and 1Gi memory: k8s/kaniko/job.yml)"
                    )

    def _statuses(self, pod: Any, *, init: bool = False) -> list[Any]:
        status = pod.status  # None on a pod the API server has not given a status yet
        if status is None:
            return []
        return list((status.init_container_statuses if init else status.container_statuses) or [])

    def _check(self, pod: Any) -> None:
        """Fail fast on what will never recover: image pulls, OOM, a failed pod, no node."""
        self._unschedulable(pod)
        for status in self._statuses(pod, init=True) + self._statuses(pod):
            _check_container(status)
        if pod.status is not None and pod.status.phase == "Failed" and not self._statuses(pod):
            raise JobError(f"pod {pod.metadata.name} failed: {pod.status.reason}: {pod.status.message}")

    def _started(self, name: str, container: str, *, init: bool = False) -> Any | None:
        pod = self.cluster.pod(name)
        self._check(pod)
        for status in self._statuses(pod, init=init):
            if (
                status.name == container
                and status.state
                and (status.state.running or status.state.terminated)
            ):
                return status
        return None

    def _terminated(self, name: str) -> Any | None:
        pod = self.cluster.pod(name)
        self._check(pod)
        for status in self._statuses(pod):
            if status.name == "kaniko" and status.state and status.state.terminated:
                return status.state.terminated
        return None

    def _check_registry(self, image: ImagePlan, digest: str) -> tuple[str, ...]:
        """Every tag must serve the digest the executor reported; returns the image's platform."""
        assert self._run is not None
        if self._run.registries is None:
            raise TypeError("KanikoBackend.open() needs the run's registry clients (RunSpec.registries)")
        client = self._run.registries.client(image.ref.host, self._run.logins.get(image.ref.host))
        for tag in image.tags:
            found = client.manifest(image.ref.repository, tag)
            if found is None or found.digest != digest:
                raise JobError(
                    f"{image.ref.with_tag(tag)} serves {found.digest if found else 'nothing'}, not the "
                    f"digest kaniko reported ({digest})"
                )
        config = client.image_config(image.ref.repository, digest) or {}
        return image.platforms or (f"{config.get('os', 'linux')}/{config.get('architecture', 'amd64')}",)


def _create_hint(message: str) -> str:
    if "PodSecurity" in message:
        return (
            "; the namespace's Pod Security level refuses the kaniko pod (the executor runs as root): "
            "build in a namespace labelled pod-security.kubernetes.io/enforce=baseline or privileged "
            "(MOLTBUILD_KUBE_NAMESPACE)"
        )
    if "serviceaccount" in message.lower():
        return "; fix: invoke kaniko.setup (it creates the ServiceAccounts)"
    if "quota" in message.lower():
        return "; the namespace's ResourceQuota has no room for the executor's requests (k8s/kaniko/job.yml)"
    return ""


def _job_conditions(job: Any | None) -> list[Any]:
    return list(job.status.conditions or []) if job is not None and job.status else []


def _check_container(status: Any) -> None:
    """A container that will never recover: its image cannot be pulled, or it ran out of memory."""
    waiting = status.state.waiting if status.state else None
    if waiting and waiting.reason in PULL_FAILURES:
        raise JobError(
            f"{status.name} container cannot start: {waiting.reason}: "
            f"{(waiting.message or '')[:200]} "
            f"(image {status.image}; check MOLTBUILD_KANIKO_IMAGE / MOLTBUILD_KANIKO_HELPER_IMAGE)"
        )
    terminated = status.state.terminated if status.state else None
    if terminated and terminated.reason == "OOMKilled":
        raise JobError(
            f"{status.name} container was OOMKilled (exit {terminated.exit_code}); raise its memory "
            "limit in k8s/kaniko/job.yml"
        )
