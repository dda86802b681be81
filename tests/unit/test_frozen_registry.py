"""Registry calls against a registry that stops answering: servers on 127.0.0.1 port 0 that accept
and never answer, answer the status line and stall, or trickle header bytes. Every client operation
fails within its bound (3x the idle timeout) naming the host and what it was doing; a stall the
retries outlive within the deadline is survived."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from moltbuild.backends.contract import PUSH_RETRY, retry_transient
from moltbuild.errors import CommandError, RegistryError
from moltbuild.flows import reuse
from moltbuild.plan.planner import ImagePlan, cache_tag
from moltbuild.refs import ImageRef
from moltbuild.registry.auth import registry_client
from moltbuild.registry.client import RegistryClient
from moltbuild.registry.session import RETRY
from moltbuild.registry.tags import put_and_confirm
from moltbuild.registry.verify import Target, check
from moltbuild.settings import load_settings
from moltbuild.system.retry import Clock

IDLE = 1.0
BOUND = 3 * IDLE
SLACK = 1.0
DIGEST = "sha256:" + "a" * 64
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}"


class Frozen:
    """Accepts every connection; `mode` says what it sends: nothing, the status line only, header
    bytes one every 0.3 s, or (`answer_from` onwards) a whole 200 answer."""

    def __init__(self, mode: str = "silent", answer_from: int | None = None):
        self.mode, self.answer_from = mode, answer_from
        self.connections = 0
        self._stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.host = f"127.0.0.1:{self._sock.getsockname()[1]}"
        self._open: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:  # closed
                return
            self.connections += 1
            self._open.append(conn)
            threading.Thread(target=self._talk, args=(conn, self.connections), daemon=True).start()

    def _talk(self, conn: socket.socket, number: int) -> None:
        if self.answer_from is not None and number >= self.answer_from:
            conn.recv(65536)
            conn.sendall(OK)
        elif self.mode == "status":
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
        elif self.mode == "trickle":
            for byte in b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"y" * 10000:
                if self._stop.wait(0.3):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def close(self) -> None:
        self._stop.set()
        for conn in self._open:
            conn.close()
        self._sock.close()


@pytest.fixture(params=["silent", "status", "trickle"])
def frozen(request) -> Iterator[Frozen]:
    server = Frozen(request.param)
    yield server
    server.close()


def client(server: Frozen, **kw) -> RegistryClient:
    return RegistryClient(
        server.host, insecure_hosts=[server.host], timeout=IDLE, retry=RETRY.but(base=0.05), **kw
    )


def timed(action) -> tuple[float, BaseException | None]:
    start = time.monotonic()
    try:
        action()
    except Exception as exc:  # the test asserts what it was
        return time.monotonic() - start, exc
    return time.monotonic() - start, None


def plan(server: Frozen) -> ImagePlan:
    return ImagePlan(
        name="api",
        ref=ImageRef.parse(f"{server.host}/ns/app", "test"),
        tags=("v1",),
        context=Path("/ctx"),
        dockerfile=Path("/ctx/Dockerfile"),
        build_args={},
        labels={},
        target=None,
        platforms=(),
        input_digest="sha256:" + "1" * 64,
        bases=(),
    )


def test_a_manifest_read_fails_within_its_bound_naming_the_host(frozen):
    seconds, exc = timed(lambda: client(frozen).manifest("ns/app", "v1", method="GET"))
    assert isinstance(exc, RegistryError), exc
    assert seconds < BOUND + SLACK, seconds
    assert str(exc) == (
        f"{frozen.host} did not answer within 3s (MOLTBUILD_IDLE_TIMEOUT=1): read manifest ns/app:v1"
    )
    if frozen.mode != "trickle":  # a request with no answer within the idle timeout is retried
        assert frozen.connections >= 2


def test_put_and_confirm_fails_within_its_bound(frozen):
    ref = ImageRef.parse(f"{frozen.host}/ns/app", "test")
    seconds, exc = timed(lambda: put_and_confirm(client(frozen), ref, ["v1", "v2"], digest=DIGEST))
    assert isinstance(exc, RegistryError), exc
    assert seconds < BOUND + SLACK, seconds
    assert f"{frozen.host} did not answer within 3s" in str(exc)
    assert str(exc).endswith(f"put tag {frozen.host}/ns/app:v1 (tags v1, v2)")


def test_a_verify_check_is_an_error_within_its_bound(frozen):
    ref = ImageRef.parse(f"{frozen.host}/ns/app:v1", "test")
    pool = type("Pool", (), {"client": lambda self, host: client(frozen)})()
    start = time.monotonic()
    result = check(Target("report", "api", ref, DIGEST), pool)
    assert time.monotonic() - start < BOUND + SLACK
    assert result.verdict == "error"
    assert result.reason.startswith(f"{frozen.host} did not answer within 3s")
    assert result.reason.endswith(f"verify {ref}")


def test_the_reuse_lookup_fails_within_its_bound(frozen):
    image = plan(frozen)
    seconds, exc = timed(lambda: reuse.find(client(frozen), image, lambda line: None))
    assert isinstance(exc, RegistryError), exc
    assert seconds < BOUND + SLACK, seconds
    assert str(exc).endswith(f"look up {frozen.host}/ns/app:{cache_tag(image.input_digest)} (reuse)")


def test_a_stall_the_retries_outlive_within_the_deadline_is_survived():
    server = Frozen("silent", answer_from=2)  # the first connection hangs, the second answers
    try:
        seconds, exc = timed(lambda: client(server).ping())
        assert exc is None, exc
        assert IDLE <= seconds < BOUND, seconds
        assert server.connections == 2
    finally:
        server.close()


def test_answering_gives_one_idle_timeout(frozen):
    seconds, exc = timed(lambda: client(frozen).answering("push stalled"))
    assert isinstance(exc, RegistryError), exc
    assert seconds < IDLE + SLACK, seconds
    assert str(exc) == f"{frozen.host} did not answer within 1s (MOLTBUILD_IDLE_TIMEOUT=1): push stalled"


def test_clients_from_settings_take_the_idle_timeout(tmp_path):
    settings = load_settings(tmp_path, environ={"MOLTBUILD_IDLE_TIMEOUT": "7"}, tool_config={})
    made = registry_client("127.0.0.1:5000", settings)
    assert (made.timeout, made.operation_timeout) == (7, 21)


def test_a_stalled_push_is_not_retried_when_the_registry_no_longer_answers():
    calls = []

    def push():
        calls.append(1)
        raise CommandError(
            ["buildah", "push"], 1, "no progress for 5s (i/o timeout, MOLTBUILD_IDLE_TIMEOUT): cut"
        )

    def gone(exc):
        raise RegistryError("127.0.0.1:5000 did not answer")

    quiet = PUSH_RETRY.but(clock=Clock(sleep=lambda s: None))
    with pytest.raises(RegistryError, match="did not answer"):
        retry_transient(push, say=lambda line: None, policy=quiet, before_retry=gone)
    assert len(calls) == 1
