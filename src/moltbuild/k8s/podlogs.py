"""Following the logs of pods' containers, one thread per container, each line handed to a
callback: a new pod (after a rollout) gets its own stream, and a pod's stream ends with it.
`close` interrupts every stream still open and joins the threads."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from moltbuild.k8s.cluster import Cluster, ClusterError

Line = Callable[[str, str, str], None]  # (pod, container, line)


class LogStreams:
    def __init__(self, cluster: Cluster, line: Line):
        self.cluster, self._line = cluster, line
        self._lock = threading.Lock()
        self._streams: dict[tuple[str, str], threading.Thread] = {}
        self._responses: list[Any] = []
        self._stop = threading.Event()

    def follow(self, pod: str, container: str) -> None:
        """Stream the container's logs, unless they are streamed already."""
        key = (pod, container)
        with self._lock:
            if self._stop.is_set() or (key in self._streams and self._streams[key].is_alive()):
                return
            thread = threading.Thread(target=self._run, args=key, name=f"logs {pod}/{container}", daemon=True)
            self._streams[key] = thread
        thread.start()

    def _opened(self, response: Any) -> None:
        with self._lock:
            self._responses.append(response)
        if self._stop.is_set():
            _shutdown(response)

    def _run(self, pod: str, container: str) -> None:
        try:
            for text in self.cluster.logs(pod, container, opened=self._opened):
                if self._stop.is_set():
                    return
                self._line(pod, container, text)
        except (ClusterError, OSError, ValueError):
            return  # the pod went away, or close() cut the stream
        except Exception as exc:  # urllib3's ProtocolError when the stream is cut
            if not type(exc).__module__.startswith("urllib3"):
                raise

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            responses, threads = list(self._responses), list(self._streams.values())
        for response in responses:
            _shutdown(response)
        for thread in threads:
            thread.join(timeout=5)


def _shutdown(response: Any) -> None:
    with contextlib.suppress(Exception):
        response.shutdown()  # interrupts a read blocked in another thread (urllib3 >= 2.3)
    with contextlib.suppress(Exception):
        response.close()
