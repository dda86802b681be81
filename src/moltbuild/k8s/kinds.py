"""Objects of any kind, named by apiVersion and kind (the dev namespace applies whatever the
manifests hold): server-side apply, list, read, watch, delete through the dynamic client. A part
of `k8s/cluster.Cluster`, the one place that talks to Kubernetes (it mixes this in)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from typing import Any

from moltbuild.errors import MoltbuildError


class ClusterError(MoltbuildError):
    """The cluster refused or could not be reached."""


class AnyKind:
    namespace: str

    def new_api(self) -> Any: ...  # Cluster's

    def _call(self, what: str, fn: Any, *args: Any, missing_ok: bool = False, **kwargs: Any) -> Any: ...

    @cached_property
    def dynamic(self) -> Any:
        from kubernetes.dynamic import DynamicClient

        return self._call("API discovery", DynamicClient, self.new_api())

    def _kind(self, api_version: str, kind: str) -> Any:
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            return self._call(f"find {kind}", self.dynamic.resources.get, api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            raise ClusterError(f"{api_version} {kind}: the cluster does not serve this kind") from None

    def server_side_apply(self, obj: dict[str, Any], manager: str) -> dict[str, Any]:
        """Apply `obj` server-side as field manager `manager` (conflicts forced); the result."""
        kind, name = obj["kind"], obj["metadata"]["name"]
        res = self._kind(obj["apiVersion"], kind)
        done = self._call(
            f"apply {kind} {name}",
            self.dynamic.server_side_apply,
            res,
            body=obj,
            namespace=self.namespace if res.namespaced else None,
            field_manager=manager,
            force_conflicts=True,
        )
        return done.to_dict()

    def objects(self, api_version: str, kind: str, labels: str = "") -> dict[str, Any]:
        """The list of `kind` in the namespace (`labels`: a selector), with its resourceVersion."""
        res = self._kind(api_version, kind)
        return self._call(f"list {kind}", res.get, namespace=self.namespace, label_selector=labels).to_dict()

    def read(self, api_version: str, kind: str, name: str) -> dict[str, Any] | None:
        res = self._kind(api_version, kind)
        found = self._call(
            f"read {kind} {name}", res.get, name=name, namespace=self.namespace, missing_ok=True
        )
        return None if found is None else found.to_dict()

    def delete(self, api_version: str, kind: str, name: str, grace: int | None = None) -> None:
        """Delete one object (its dependents in the background); gone already is fine."""
        res = self._kind(api_version, kind)
        body = {"propagationPolicy": "Background", "gracePeriodSeconds": grace}
        self._call(
            f"delete {kind} {name}",
            res.delete,
            name=name,
            namespace=self.namespace if res.namespaced else None,
            body=body,
            missing_ok=True,
        )

    def changes(
        self, api_version: str, kind: str, labels: str, since: str, timeout: int
    ) -> Iterator[dict[str, Any]]:
        """Each changed object (its JSON) after resourceVersion `since`, for up to `timeout` s; ends
        early when the watch breaks (the caller lists again)."""
        res = self._kind(api_version, kind)
        events = self._call(
            f"watch {kind}",
            self.dynamic.watch,
            res,
            namespace=self.namespace,
            label_selector=labels,
            resource_version=since,
            timeout=timeout,
        )
        from kubernetes.client.exceptions import ApiException

        try:
            for event in events:
                if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                    yield event["raw_object"]
        except ApiException:  # 410 Gone (the version expired) and the like: the caller lists again
            return
        finally:
            events.close()  # ends the watch's request at once
