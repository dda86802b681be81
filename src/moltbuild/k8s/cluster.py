"""The one place that talks to Kubernetes, through the official client: kubeconfig contexts and
exec auth plugins work as they do for kubectl; inside a pod without a kubeconfig, its service
account. The client is imported only when a cluster is used (it is slow to import)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from functools import cached_property
from typing import Any

from moltbuild.k8s.kinds import AnyKind, ClusterError


def _reason(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if body:
        try:
            return str(json.loads(body).get("message") or body)[:300]
        except (ValueError, AttributeError):
            return str(body)[:300]
    return str(getattr(exc, "reason", None) or exc).splitlines()[0][:300]


class Cluster(AnyKind):
    def __init__(
        self,
        *,
        context: str | None = None,
        namespace: str = "default",
        environ: Mapping[str, str],
        forbidden_fix: str = "",
    ):
        self.context = context or None
        self.namespace = namespace
        # what a 403 tells the user to do (default: the kaniko runner's Role)
        self.forbidden_fix = forbidden_fix or (
            "invoke kaniko.setup, or ask for the moltbuild-kaniko-runner Role in namespace " + namespace
        )
        self.environ = dict(environ)  # the run context's (KUBECONFIG, proxies): never os.environ here

    # -- connection ----------------------------------------------------------------------------

    @cached_property
    def api(self) -> Any:
        return self.new_api()

    def new_api(self) -> Any:
        """A client of its own: the exec stream swaps the request method of the client it runs
        on, so an exec beside other calls (two images at once) needs one nobody else uses."""
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        try:
            if self.kubeconfig:
                return config.new_client_from_config(config_file=self.kubeconfig, context=self.context)
            if self.environ.get("KUBERNETES_SERVICE_HOST"):
                cfg = client.Configuration()
                config.load_incluster_config(client_configuration=cfg)
                return client.ApiClient(cfg)
        except ConfigException as exc:
            raise ClusterError(
                f"kubeconfig: {_reason(exc)}; fix: kubectl config use-context CONTEXT"
            ) from None
        raise ClusterError("no kubeconfig (KUBECONFIG or ~/.kube/config) and not inside a pod")

    @cached_property
    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api)

    @cached_property
    def batch(self) -> Any:
        from kubernetes import client

        return client.BatchV1Api(self.api)

    @cached_property
    def rbac(self) -> Any:
        from kubernetes import client

        return client.RbacAuthorizationV1Api(self.api)

    @property
    def kubeconfig(self) -> str | None:
        """KUBECONFIG (one or more paths, as kubectl reads it) or ~/.kube/config, when present."""
        home = self.environ.get("HOME") or os.path.expanduser("~")
        paths = self.environ.get("KUBECONFIG") or os.path.join(home, ".kube", "config")
        return paths if any(os.path.exists(p) for p in paths.split(os.pathsep)) else None

    def current_context(self) -> str:
        from kubernetes import config

        if self.context:
            return self.context
        if not self.kubeconfig:
            return "in-cluster service account"
        try:
            _, active = config.list_kube_config_contexts(config_file=self.kubeconfig)
        except Exception as exc:  # the client raises ConfigException and plain errors alike
            raise ClusterError(f"kubeconfig {self.kubeconfig}: {_reason(exc)}") from None
        return active["name"]

    def _call(self, what: str, fn: Any, *args: Any, missing_ok: bool = False, **kwargs: Any) -> Any:
        """`fn(*args)`, every failure a ClusterError naming `what`; with `missing_ok`, a 404 is None."""
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            if exc.status == 404 and missing_ok:
                return None
            if exc.status == 403:
                raise ClusterError(f"{what}: forbidden ({_reason(exc)}); fix: {self.forbidden_fix}") from None
            raise ClusterError(f"{what}: HTTP {exc.status}: {_reason(exc)}") from None
        except (OSError, ValueError) as exc:  # connection refused, TLS, timeouts (urllib3 errors)
            raise ClusterError(f"{what}: the cluster does not answer ({_reason(exc)})") from None
        except Exception as exc:
            if type(exc).__module__.startswith("urllib3"):
                raise ClusterError(f"{what}: the cluster does not answer ({_reason(exc)})") from None
            raise

    def version(self) -> str:
        from kubernetes import client

        info = self._call("GET /version", client.VersionApi(self.api).get_code, _request_timeout=10)
        return str(info.git_version)

    def allowed(self, verb: str, resource: str, *, group: str = "", subresource: str = "") -> bool | None:
        """Whether this identity may `verb` the resource in the namespace (None: not answered)."""
        from kubernetes import client

        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "namespace": self.namespace,
                    "verb": verb,
                    "group": group,
                    "resource": resource,
                    "subresource": subresource,
                }
            },
        }
        api = client.AuthorizationV1Api(self.api)
        answer = self._call("SelfSubjectAccessReview", api.create_self_subject_access_review, review)
        return answer.status.allowed if answer.status is not None else None

    # -- objects -------------------------------------------------------------------------------

    def apply(self, obj: dict[str, Any]) -> str:
        """Create `obj`, or patch it to match when it exists; returns 'created' or 'updated'."""
        from kubernetes.client.exceptions import ApiException

        kind, name = obj["kind"], obj["metadata"]["name"]
        create, patch = {
            "Secret": (self.core.create_namespaced_secret, self.core.patch_namespaced_secret),
            "ServiceAccount": (
                self.core.create_namespaced_service_account,
                self.core.patch_namespaced_service_account,
            ),
            "Role": (self.rbac.create_namespaced_role, self.rbac.patch_namespaced_role),
            "RoleBinding": (
                self.rbac.create_namespaced_role_binding,
                self.rbac.patch_namespaced_role_binding,
            ),
        }[kind]
        try:
            create(self.namespace, obj)
            return "created"
        except ApiException as exc:
            if exc.status != 409:
                return self._call(f"create {kind} {name}", create, self.namespace, obj)
        self._call(f"update {kind} {name}", patch, name, self.namespace, obj)
        return "updated"

    def ensure_namespace(self, labels: Mapping[str, str] | None = None) -> str:
        """The namespace, created when missing (with `labels`); 'created' or 'exists'."""
        from kubernetes import client

        core = client.CoreV1Api(self.api)
        found = self._call(
            f"read namespace {self.namespace}", core.read_namespace, self.namespace, missing_ok=True
        )
        if found is not None:
            return "exists"
        labels = labels or {"app.kubernetes.io/managed-by": "moltbuild"}
        body = {"metadata": {"name": self.namespace, "labels": dict(labels)}}
        self._call(f"create namespace {self.namespace}", core.create_namespace, body)
        return "created"

    def job(self, name: str) -> Any | None:
        return self._call(
            f"read Job {name}", self.batch.read_namespaced_job, name, self.namespace, missing_ok=True
        )

    def events(self, kind: str, name: str) -> list[Any]:
        """Warnings the cluster recorded about one object (why a Job makes no pod, why a pod
        does not start), oldest first."""
        found = self._call(
            f"list events of {kind} {name}",
            self.core.list_namespaced_event,
            self.namespace,
            field_selector=f"involvedObject.kind={kind},involvedObject.name={name},type=Warning",
        )
        mine = [  # the selector is the server's filter; checked again for one that ignores it
            e
            for e in found.items
            if e.involved_object is not None
            and (e.involved_object.kind, e.involved_object.name) == (kind, name)
            and e.type == "Warning"
        ]
        return sorted(mine, key=lambda e: str(e.last_timestamp or e.event_time or ""))

    def secret_exists(self, name: str) -> bool:

        found = self._call(
            f"read Secret {name}", self.core.read_namespaced_secret, name, self.namespace, missing_ok=True
        )
        return found is not None

    def create_job(self, job: dict[str, Any]) -> None:
        self._call(
            f"create Job {job['metadata']['name']}", self.batch.create_namespaced_job, self.namespace, job
        )

    def delete_job(self, name: str) -> None:

        self._call(  # a 404: already gone
            f"delete Job {name}",
            self.batch.delete_namespaced_job,
            name,
            self.namespace,
            propagation_policy="Background",
            missing_ok=True,
        )

    def job_pod(self, job: str) -> Any | None:
        pods = self._call(
            f"list pods of Job {job}",
            self.core.list_namespaced_pod,
            self.namespace,
            label_selector=f"job-name={job}",
        ).items
        return pods[0] if pods else None

    def pod(self, name: str) -> Any:
        return self._call(f"read pod {name}", self.core.read_namespaced_pod, name, self.namespace)

    def log_tail(self, pod: str, container: str, lines: int, *, previous: bool = False) -> list[str]:
        """The container's last `lines` log lines (`previous`: of the instance before a restart)."""
        text = self._call(
            f"logs of pod {pod}",
            self.core.read_namespaced_pod_log,
            pod,
            self.namespace,
            container=container,
            tail_lines=lines,
            previous=previous,
            missing_ok=True,
        )
        return str(text or "").splitlines()

    def portforward(self, pod: str, port: int) -> Any:
        """A socket to `port` of the pod, through the API server (as `kubectl port-forward`);
        closing it ends the forward."""
        from kubernetes import client
        from kubernetes.stream import portforward

        api = self.new_api()  # the stream swaps the request method of its client: one each
        pf = self._call(
            f"port-forward to pod {pod}:{port}",
            portforward,
            client.CoreV1Api(api).connect_get_namespaced_pod_portforward,
            pod,
            self.namespace,
            ports=str(port),
        )
        return pf.socket(port)

    def exec_stdin(
        self, pod: str, container: str, command: list[str], data: bytes, timeout: float
    ) -> tuple[int, str]:
        """Run `command` in the container with `data` on stdin; (exit code, output). The command
        must stop reading after len(data) bytes by itself (`head -c N`): closing stdin needs the
        v5 channel protocol, which API servers before 1.30 and some proxies do not speak."""
        from kubernetes import client
        from kubernetes.stream import stream

        api = self.new_api()
        try:
            ws = self._call(
                f"exec in pod {pod}",
                stream,
                client.CoreV1Api(api).connect_get_namespaced_pod_exec,
                pod,
                self.namespace,
                container=container,
                command=command,
                stdin=True,
                stdout=True,
                stderr=True,
                tty=False,
                binary=True,
                _preload_content=False,
            )
            return _feed(ws, data, timeout)
        finally:
            api.close()

    def logs(self, pod: str, container: str, opened: Callable[[Any], None] | None = None) -> Iterator[str]:
        """The container's log lines as they come, until it ends; `opened` gets the response (its
        `close()` ends the stream from another thread)."""
        resp = self._call(
            f"logs of pod {pod}",
            self.core.read_namespaced_pod_log,
            pod,
            self.namespace,
            container=container,
            follow=True,
            _preload_content=False,
        )
        if opened is not None:
            opened(resp)
        pending = b""
        try:
            for chunk in resp.stream(1024):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace")
            if pending:
                yield pending.decode(errors="replace")
        finally:
            resp.release_conn()


def _feed(ws: Any, data: bytes, timeout: float) -> tuple[int, str]:
    try:
        for start in range(0, len(data), 1 << 20):
            ws.write_stdin(data[start : start + (1 << 20)])
        ws.run_forever(timeout=timeout)
        try:
            code = ws.returncode  # before read_all(), which drops the status channel
        except (TypeError, KeyError, IndexError, ValueError):  # no status: the stream broke
            code = None
        output = ws.read_all()
    finally:
        ws.close()
    text = output.decode(errors="replace") if isinstance(output, bytes) else str(output)
    return (code if code is not None else -1), text
