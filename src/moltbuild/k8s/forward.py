"""Port-forwards to pods through the API server, as `kubectl port-forward` does (the cluster may
have no kube-proxy or DNS): a listener on a free 127.0.0.1 port, each connection carried to the
port of the pod currently targeted (`retarget` after a rollout) over its own port-forward
stream. `close` stops the listener and every connection, and joins the threads."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from typing import Any

from moltbuild.k8s.cluster import Cluster, ClusterError

_CHUNK = 1 << 16
_IDLE_S = 1.0  # how often a connection's thread looks at the stop flag


class Forward:
    def __init__(self, cluster: Cluster, port: int, pod: str | None = None):
        self.cluster, self.port, self.pod = cluster, port, pod
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.local = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._open: set[Any] = set()
        self._threads: list[threading.Thread] = []
        self._start(self._accept, f"forward 127.0.0.1:{self.local}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local}/"

    def retarget(self, pod: str) -> None:
        """New connections go to `pod` (those open keep their pod until they end)."""
        self.pod = pod

    def _start(self, target: Any, name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed
                return
            self._start(self._serve, f"forward {self.local} connection", conn)

    def _serve(self, conn: socket.socket) -> None:
        remote = None
        try:
            if self.pod is None or self._stop.is_set():
                return
            remote = self.cluster.portforward(self.pod, self.port)
            with self._lock:
                self._open.update((conn, remote))
            _pump(conn, remote, self._stop)
        except ClusterError:
            return  # the client sees its connection closed: the pod is gone or not yet there
        finally:
            for sock in (conn, remote):
                if sock is not None:
                    with self._lock:
                        self._open.discard(sock)
                    with contextlib.suppress(OSError):
                        sock.close()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        self._listener.close()
        with self._lock:
            for sock in list(self._open):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=5)


def _pump(a: Any, b: Any, stop: threading.Event) -> None:
    """Bytes both ways until either side closes (or `stop`)."""
    peers = {a: b, b: a}
    while not stop.is_set():
        readable, _, _ = select.select(list(peers), [], [], _IDLE_S)
        for sock in readable:
            try:
                data = sock.recv(_CHUNK)
                if not data:
                    return
                peers[sock].sendall(data)
            except OSError:  # either side went away (the client left, the pod was replaced)
                return
