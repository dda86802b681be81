"""The Go tool lock with a real (small) Go module: a cached binary whose bytes were changed is
refused and rebuilt to the lock's hash, and `invoke setup` returns while the tools are still being
built, holding their locks, so a command that needs one waits for it and then finds it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from moltbuild.flows import install
from moltbuild.system import gotools, state, toollock
from moltbuild.system.processes import Runner
from moltbuild.system.toollock import Lock, Tool
from tests.conftest import ROOT, need_tool

# A real module with no dependencies: its build takes seconds once Go's cache holds the stdlib.
TOMLV = Tool("tomlv", "github.com/BurntSushi/toml/cmd/tomlv", "v1.6.0", "1.18", "a small real Go tool")


@pytest.fixture(scope="module")
def lock(tmp_path_factory) -> Lock:
    """A lock of tomlv made as `invoke setup --relock` makes one (the machine's Go cache)."""
    need_tool("go")
    path = tmp_path_factory.mktemp("lock") / "go-tools.lock.toml"
    base = toollock.load()
    runner = Runner(out=lambda _: None, environ=os.environ)
    draft = Lock(base.go, base.flags, base.env, {"tomlv": TOMLV}, path)
    places = gotools.Places(path.parent / "bin", path.parent / "cache", path.parent / "state")
    made = install.relock_tools(runner, draft, places)
    digest = made.tools["tomlv"].sha256[toollock.platform()]
    assert toollock.load(path).tools["tomlv"].sha256 == {toollock.platform(): digest}
    assert made.tools["tomlv"].go_min == "1.18"  # the module's go.mod
    # what was locked is also installed and cached: no second build
    assert toollock.sha256_file(places.bindir / "tomlv") == digest
    assert toollock.sha256_file(places.cache / "tomlv" / "v1.6.0" / "tomlv") == digest
    return made


def go_caches() -> dict[str, str]:
    found = subprocess.run(["go", "env", "GOCACHE", "GOMODCACHE"], capture_output=True, text=True, check=True)
    return dict(zip(("GOCACHE", "GOMODCACHE"), found.stdout.split(), strict=True))


def test_a_tampered_cached_binary_is_refused_and_rebuilt_to_the_locks_hash(lock, tmp_path):
    places = gotools.Places(tmp_path / "bin", tmp_path / "cache", tmp_path / "state")
    expected = lock.tools["tomlv"].sha256[toollock.platform()]
    cached = tmp_path / "cache" / "tomlv" / "v1.6.0" / "tomlv"
    said: list[str] = []
    runner = Runner(out=said.append, environ=os.environ)
    assert gotools.prepare(runner, lock, places) == {"tomlv": "built"}  # the first time: built, cached
    assert toollock.sha256_file(cached) == expected
    shutil.rmtree(places.bindir)
    with cached.open("ab") as f:
        f.write(b"\0tampered")
    said.clear()
    assert gotools.prepare(runner, lock, places) == {"tomlv": "built"}
    assert said[0].startswith(f"tomlv: refused {cached}: sha256 ") and said[0].endswith("; rebuilding")
    assert toollock.sha256_file(places.bindir / "tomlv") == expected
    assert toollock.sha256_file(cached) == expected  # the cache holds the good one again
    said.clear()
    shutil.rmtree(places.bindir)
    assert gotools.prepare(runner, lock, places) == {"tomlv": "restored"}


def test_setup_returns_while_the_tools_build_and_a_user_waits_for_its_tool(lock, tmp_path):
    need_tool("go")
    shim = tmp_path / "shim"
    shim.mkdir()
    go = shutil.which("go")
    # The real go, a few seconds slower to install: time enough to see setup return first.
    (shim / "go").write_text(f'#!/bin/sh\n[ "$1" = install ] && sleep 4\nexec {go} "$@"\n')
    (shim / "go").chmod(0o755)
    environ = {
        **os.environ,
        "HOME": str(tmp_path / "home"),
        "PATH": f"{shim}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT / "src"),
        **go_caches(),  # a new HOME, the machine's Go caches
    }
    places = gotools.Places(tmp_path / "bin", None, gotools.state_dir(environ))
    said: list[str] = []
    runner = Runner(out=said.append, environ=environ)
    started = time.monotonic()
    install.start_background(runner, lock, places)
    assert time.monotonic() - started < 4  # returned before the build could end
    assert gotools.preparing(environ, "tomlv") and not (places.bindir / "tomlv").exists()
    assert "preparing tomlv in the background" in said[-1]
    said.clear()
    state.begin_command()  # the note is said once per command
    gotools.wait_ready(environ, "tomlv", said.append, timeout=120)
    assert said and said[0].startswith("waiting for tomlv")
    assert toollock.sha256_file(places.bindir / "tomlv") == lock.tools["tomlv"].sha256[toollock.platform()]
    assert "tomlv built" in (places.state / "prepare.log").read_text()
