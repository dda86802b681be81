"""A loopback HTTP proxy in front of a real registry that injects faults on a schedule:
"503" answers 503 with Retry-After, "429" answers 429 Too Many Requests, "reset" drops the
connection with a TCP RST, "stall" reads the request and then answers nothing until the proxy stops
(a registry that hangs, e.g. under `kill -STOP`), "ok" forwards. `rules` put a fault on the first
requests whose "METHOD /path" matches a pattern, each rule once, before the schedule applies;
`refuse` answers every request whose "METHOD /path" matches with 403 DENIED, as a registry does for
a repository the credentials may not touch (e.g. a GHCR package the workflow has no write access to).

With paginate_tags it also pages `tags/list` by `n`/`last` with a `Link: rel="next"` header, as
ghcr.io and distribution 3 do: Debian's distribution 2.8 ignores `n` for tags (it pages only
`_catalog`), so this is the one place the tests stand in for a registry behaviour."""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

DENIED = "requested access to the resource is denied"


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        faults: list[str] | None = None,
        *,
        default: str = "ok",
        retry_after: str = "0.1",
        paginate_tags: bool = False,
        rules: list[tuple[str, str]] | None = None,
        refuse: str | None = None,
    ):
        self.refuse = re.compile(refuse) if refuse else None
        self.rules = [(re.compile(pattern), fault) for pattern, fault in rules or []]
        self._stopping = threading.Event()
        self.paginate_tags = paginate_tags
        self.upstream = upstream.rstrip("/")
        self.faults = deque(faults or [])
        self.default = default
        self.retry_after = retry_after
        self.seen: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def next_fault(self, line: str) -> str:
        with self._lock:
            if self.refuse and self.refuse.search(line):
                self.seen.append(f"403 {line}")
                return "403"
            rule = next((r for r in self.rules if r[0].search(line)), None)
            if rule:
                self.rules.remove(rule)
                self.seen.append(f"{rule[1]} {line}")
                return rule[1]
            fault = self.faults.popleft() if self.faults else self.default
            self.seen.append(f"{fault} {line}")
            return fault

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _relay(self) -> None:
                fault = proxy.next_fault(f"{self.command} {self.path}")
                body = self._body()
                if fault == "stall":
                    proxy._stopping.wait(600)
                    self.close_connection = True
                    return
                if fault == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                if fault == "403":
                    denied = json.dumps({"errors": [{"code": "DENIED", "message": DENIED}]}).encode()
                    self.send_response(403)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(denied)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(denied)
                    return
                if fault in ("503", "429"):
                    self.send_response(int(fault))
                    self.send_header("Retry-After", proxy.retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    # Host goes through: the registry builds upload Locations from it, so every
                    # request of a push keeps coming through this proxy
                    if k.lower() not in ("content-length", "transfer-encoding")
                }
                parts = urlsplit(self.path)
                if (
                    proxy.paginate_tags
                    and self.command == "GET"
                    and re.match(r"^/v2/.+/tags/list$", parts.path)
                ):
                    self._paged_tags(parts, headers)
                    return
                resp = requests.request(
                    self.command,
                    proxy.upstream + self.path,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                    timeout=30,
                )
                self.send_response(resp.status_code)
                for key, value in resp.headers.items():
                    if key.lower() not in (
                        "content-length",
                        "transfer-encoding",
                        "connection",
                        "content-encoding",
                    ):
                        self.send_header(key, value)
                payload = b"" if self.command == "HEAD" else resp.content
                self.send_header(
                    "Content-Length",
                    resp.headers.get("Content-Length", str(len(payload)))
                    if self.command == "HEAD"
                    else str(len(payload)),
                )
                self.end_headers()
                if payload:
                    self.wfile.write(payload)

            def _body(self) -> bytes | None:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":  # blob uploads
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else None

            def _paged_tags(self, parts, headers) -> None:
                resp = requests.get(proxy.upstream + parts.path, headers=headers, timeout=30)
                query = parse_qs(parts.query)
                doc = resp.json()
                tags = sorted(doc.get("tags") or [])
                if "last" in query:
                    tags = [t for t in tags if t > query["last"][0]]
                size = int(query.get("n", [len(tags) or 1])[0])
                page, more = tags[:size], len(tags) > size
                body = json.dumps({"name": doc.get("name"), "tags": page}).encode()
                self.send_response(resp.status_code)
                self.send_header("Content-Type", "application/json")
                if more:
                    nxt = urlencode({"n": size, "last": page[-1]})
                    self.send_header("Link", f'<{parts.path}?{nxt}>; rel="next"')
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _relay

        return Handler
