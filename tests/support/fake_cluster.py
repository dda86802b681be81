"""A FAKE Kubernetes API for the kaniko tests: no cluster and no kaniko executor can run on these
machines. Built on kmock's KubernetesEmulator (objects in memory over HTTP, served to the real
`kubernetes` client), plus what kmock lacks: pod exec over the websocket channel protocol (the
bytes sent to stdin are kept for assertions). Nothing here runs containers: the test plays the
Job controller and the executor by writing pod status."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import kmock
from kubernetes import client


class FakeKubernetes(kmock.KubernetesEmulator):
    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for resource in (
            "v1/pods",
            "v1/secrets",
            "v1/serviceaccounts",
            "v1/events",
            "batch/v1/jobs",
            "rbac.authorization.k8s.io/v1/roles",
            "rbac.authorization.k8s.io/v1/rolebindings",
        ):
            self.resources[resource] = {}
        # the official client asks /version/, with the slash
        self["get /version/"] << {
            "major": "1",
            "minor": "31",
            "gitVersion": "v1.31.0-fake",
            "gitCommit": "fake",
            "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "go1.22",
            "compiler": "gc",
            "platform": "linux/amd64",
        }
        self.denied: set[str] = set()  # "resource" or "resource/subresource" the identity may not use
        self.delivered: dict[str, bytes] = {}  # pod name -> bytes received on exec stdin
        self.exec_commands: dict[str, list[str]] = {}

    async def _review(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """RBAC answers, never stored (a real API server keeps no review objects either)."""
        review = await raw_request.json()
        attrs = review["spec"]["resourceAttributes"]
        key = "/".join(filter(None, [attrs.get("resource"), attrs.get("subresource")]))
        return aiohttp.web.json_response({**review, "status": {"allowed": key not in self.denied}})

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw_request.path.endswith("/selfsubjectaccessreviews"):
            return await self._review(raw_request)
        namespace = re.fullmatch(r"/api/v1/namespaces/([^/]+)", raw_request.path)
        if namespace and raw_request.method == "GET":  # every namespace exists (kmock stores none)
            return aiohttp.web.json_response(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace.group(1)}}
            )
        if (
            raw_request.path.endswith("/exec")
            and raw_request.headers.get("Upgrade", "").lower() == "websocket"
        ):
            return await self._exec(raw_request)
        return await super().__call__(raw_request)

    async def _exec(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        pod = raw_request.path.rstrip("/").split("/")[-2]
        ws = aiohttp.web.WebSocketResponse(protocols=("v5.channel.k8s.io", "v4.channel.k8s.io"))
        await ws.prepare(raw_request)  # type: ignore[arg-type]
        command = raw_request.query.getall("command", [])
        # The command reads what `head -c N` lets through, then exits, as a real one would.
        wanted = re.search(r"head -c (\d+)", " ".join(command))
        size = int(wanted.group(1)) if wanted else None
        data = bytearray()
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                continue
            if msg.data[:2] == b"\xff\x00":  # v5: the client closed stdin
                break
            if msg.data[:1] == b"\x00":
                data += msg.data[1:]
            if size is not None and len(data) >= size:
                break
        self.exec_commands[pod] = command
        self.delivered[pod] = bytes(data)
        await ws.send_bytes(b"\x03" + json.dumps({"metadata": {}, "status": "Success"}).encode())
        await ws.close()
        return ws


class FakeCluster:
    """The fake API in a thread of its own, a kubeconfig pointing at it, and a client for the test."""

    def __init__(self, namespace: str = "moltbook"):
        self.namespace = namespace
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.url = ""
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        async def main() -> None:
            self._stop = asyncio.Event()
            async with FakeKubernetes() as fake, kmock.Server(fake) as server:
                self.fake = fake
                self.url = f"http://{server.host}:{server.port}"
                self._ready.set()
                await self._stop.wait()

        self._loop.run_until_complete(main())

    def __enter__(self) -> FakeCluster:
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("the fake Kubernetes API did not start")
        cfg = client.Configuration()
        cfg.host = self.url
        self.api = client.ApiClient(cfg)
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.rbac = client.RbacAuthorizationV1Api(self.api)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "fake", "user": {"token": "fake-token"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                    "current-context": "fake",
                }
            )
        )
        return path

    # -- playing the Job controller and the executor ---------------------------------------------

    def wait_for_job(self, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            jobs = self.batch.list_namespaced_job(self.namespace).items
            if jobs:
                return jobs[0]
            time.sleep(0.05)
        raise AssertionError("no Job was created")

    def jobs(self) -> list[str]:
        return [j.metadata.name for j in self.batch.list_namespaced_job(self.namespace).items]

    def start_pod(self, job: Any, **status: Any) -> str:
        """What the Job controller and kubelet would do: a pod whose init container runs (or,
        with `status`, a pod created in that state at once: no moment in another one)."""
        name = f"{job.metadata.name}-x7k2p"
        spec = job.spec.template.spec
        self.core.create_namespaced_pod(
            self.namespace,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": {"job-name": job.metadata.name}},
                "spec": self.api.sanitize_for_serialization(spec),
            },
        )
        self.set_status(name, **(status or {"phase": "Pending", "init": {"running": {}}}))
        return name

    def set_status(
        self,
        pod: str,
        *,
        phase: str,
        init: dict[str, Any] | None = None,
        main: dict[str, Any] | None = None,
        reason: str | None = None,
    ) -> None:
        def status(name: str, state: dict[str, Any]) -> dict[str, Any]:
            return {
                "name": name,
                "image": name,
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": state,
            }

        body: dict[str, Any] = {"phase": phase, "reason": reason}
        if init is not None:
            body["initContainerStatuses"] = [status("context", init)]
        if main is not None:
            body["containerStatuses"] = [status("kaniko", main)]
        self.core.patch_namespaced_pod_status(pod, self.namespace, {"status": body})

    def serve_log(self, pod: str, text: str) -> None:
        self.fake[f"get /api/v1/namespaces/{self.namespace}/pods/{pod}/log"] << text.encode()

    def wait_delivered(self, pod: str, timeout: float = 60) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pod in self.fake.delivered:
                return self.fake.delivered[pod]
            time.sleep(0.05)
        raise AssertionError("the build context was never delivered")
