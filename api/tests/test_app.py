"""The API over real HTTP on an ephemeral port."""

import json
import threading
import urllib.error
import urllib.request

import pytest
from moltbook_api.app import make_server


@pytest.fixture()
def base_url():
    server = make_server("127.0.0.1", 0, version="1.2.3")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def call(url, method="GET", payload=None):
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_health_and_version(base_url):
    assert call(f"{base_url}/healthz") == (200, {"status": "ok"})
    assert call(f"{base_url}/api/v1/version") == (200, {"version": "1.2.3"})


def test_create_list_get_like(base_url):
    status, post = call(f"{base_url}/api/v1/posts", "POST", {"author": "ada", "body": " hello "})
    assert status == 201 and post["body"] == "hello" and post["likes"] == 0
    call(f"{base_url}/api/v1/posts", "POST", {"author": "bob", "body": "second"})
    status, listing = call(f"{base_url}/api/v1/posts")
    assert [p["author"] for p in listing["posts"]] == ["bob", "ada"]
    assert call(f"{base_url}/api/v1/posts/{post['id']}")[1]["author"] == "ada"
    status, liked = call(f"{base_url}/api/v1/posts/{post['id']}/like", "POST", {})
    assert status == 200 and liked["likes"] == 1


@pytest.mark.parametrize(
    "payload, fragment",
    [({"author": "", "body": "x"}, "author"), ({"author": "a", "body": ""}, "body"), ([1], "object")],
)
def test_rejects_bad_posts(base_url, payload, fragment):
    status, body = call(f"{base_url}/api/v1/posts", "POST", payload)
    assert status == 400 and fragment in body["error"]


def test_unknown_routes_and_posts_are_404(base_url):
    assert call(f"{base_url}/nope")[0] == 404
    assert call(f"{base_url}/api/v1/posts/999")[0] == 404
    assert call(f"{base_url}/api/v1/posts/999/like", "POST", {})[0] == 404
