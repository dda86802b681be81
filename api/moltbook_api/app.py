"""HTTP handlers and an in-memory, thread-safe post store."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 64 * 1024
POST_PATH = re.compile(r"^/api/v1/posts/(\d+)$")


class PostStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._posts: dict[int, dict] = {}
        self._next_id = 1

    def create(self, author: str, body: str) -> dict:
        with self._lock:
            post = {"id": self._next_id, "author": author, "body": body, "created": time.time(), "likes": 0}
            self._posts[post["id"]] = post
            self._next_id += 1
            return dict(post)

    def list(self, limit: int = 50) -> list[dict]:
        with self._lock:
            return [dict(p) for p in sorted(self._posts.values(), key=lambda p: -p["id"])[:limit]]

    def get(self, post_id: int) -> dict | None:
        with self._lock:
            post = self._posts.get(post_id)
            return dict(post) if post else None

    def like(self, post_id: int) -> dict | None:
        with self._lock:
            post = self._posts.get(post_id)
            if post is None:
                return None
            post["likes"] += 1
            return dict(post)


def validate_post(payload: object) -> tuple[str, str]:
    if not isinstance(payload, dict):
        raise ValueError("body must be a JSON object")
    author, body = payload.get("author"), payload.get("body")
    if not isinstance(author, str) or not 1 <= len(author.strip()) <= 64:
        raise ValueError("author must be a string of 1 to 64 characters")
    if not isinstance(body, str) or not 1 <= len(body.strip()) <= 2000:
        raise ValueError("body must be a string of 1 to 2000 characters")
    return author.strip(), body.strip()


def make_handler(store: PostStore, version: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = f"moltbook-api/{version}"

        def log_message(self, fmt: str, *args: object) -> None:
            if os.environ.get("MOLTBOOK_ACCESS_LOG", "1") != "0":
                super().log_message(fmt, *args)

        def _send(self, status: HTTPStatus, payload: object) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Access-Control-Allow-Origin", "*")
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: HTTPStatus, message: str) -> None:
            self._send(status, {"error": message})

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._send(HTTPStatus.OK, {"status": "ok"})
            elif path == "/api/v1/version":
                self._send(HTTPStatus.OK, {"version": version})
            elif path == "/api/v1/posts":
                self._send(HTTPStatus.OK, {"posts": store.list()})
            elif match := POST_PATH.match(path):
                post = store.get(int(match.group(1)))
                if post is None:
                    self._error(HTTPStatus.NOT_FOUND, "no such post")
                else:
                    self._send(HTTPStatus.OK, post)
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no route for GET {path}")

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/api/v1/posts":
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
                    return
                try:
                    author, body = validate_post(json.loads(self.rfile.read(length) or b"null"))
                except (ValueError, json.JSONDecodeError) as exc:
                    self._error(HTTPStatus.BAD_REQUEST, str(exc))
                    return
                self._send(HTTPStatus.CREATED, store.create(author, body))
            elif (match := POST_PATH.match(path.removesuffix("/like"))) and path.endswith("/like"):
                post = store.like(int(match.group(1)))
                if post is None:
                    self._error(HTTPStatus.NOT_FOUND, "no such post")
                else:
                    self._send(HTTPStatus.OK, post)
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no route for POST {path}")

    return Handler


def make_server(host: str, port: int, version: str = "dev") -> ThreadingHTTPServer:
    return ThreadingHTTPServer((host, port), make_handler(PostStore(), version))
