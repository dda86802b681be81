"""The Go tool lock: parsed, written back the same, a binary whose hash is not the lock's refused,
the Go floor said exactly, and the per-tool file locks a waiting command reads."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from filelock import FileLock

from moltbuild.errors import ConfigError
from moltbuild.system import gotools, state, toollock
from moltbuild.system.processes import Runner
from moltbuild.system.toollock import Lock, Tool

GOOD = b"#!/bin/sh\necho the real tool\n"


def lock_of(tmp_path: Path, content: bytes = GOOD, go_min: str = "1.22") -> Lock:
    digest = hashlib.sha256(content).hexdigest()
    tool = Tool(
        "tiny", "example.com/tiny/cmd/tiny", "v1.2.3", go_min, "a test tool", {toollock.platform(): digest}
    )
    return Lock("1.26.8", ("-trimpath",), {"CGO_ENABLED": "0"}, {"tiny": tool}, tmp_path / "lock.toml")


def places(tmp_path: Path) -> gotools.Places:
    return gotools.Places(tmp_path / "bin", tmp_path / "cache", tmp_path / "state")


def cached(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "cache" / "tiny" / "v1.2.3" / "tiny"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    return path


def test_the_repositorys_lock_pins_every_go_tool_with_its_go_floor():
    lock = toollock.load()
    assert set(lock.tools) == {"kustomize", "syft", "cosign"}
    assert "-trimpath" in lock.flags and lock.env["CGO_ENABLED"] == "0"
    for tool in lock.tools.values():
        assert tool.version.startswith("v") and toollock.go_version(f"go{tool.go_min}") == tool.go_min
        assert len(tool.sha256["linux/amd64"]) == 64  # GitHub's runners and this machine: relocked
        assert all(len(h) == 64 for h in tool.sha256.values())


def test_the_lock_is_written_back_as_it_was_read(tmp_path):
    lock = toollock.load()
    path = tmp_path / "lock.toml"
    path.write_text(toollock.dumps(lock))
    again = toollock.load(path)
    assert (again.go, again.flags, dict(again.env), dict(again.tools)) == (
        lock.go,
        lock.flags,
        dict(lock.env),
        dict(lock.tools),
    )


def test_a_broken_lock_is_one_line_naming_the_file_and_key(tmp_path):
    path = tmp_path / "lock.toml"
    path.write_text('go = "1.26.8"\nflags = []\nenv = {}\n[tools.syft]\nversion = "v1"\n')
    with pytest.raises(ConfigError, match=r"lock\.toml: key 'module' missing .*invoke setup --relock"):
        toollock.load(path)
    path.write_text("go = [")
    with pytest.raises(ConfigError, match=r"lock\.toml: cannot read the tool lock"):
        toollock.load(path)


@pytest.mark.parametrize(
    ("found", "said"),
    [
        (None, "cosign v2.6.5 needs Go 1.25.0 or newer; no `go` on PATH: install Go 1.26.8"),
        ("1.22.5", "cosign v2.6.5 needs Go 1.25.0 or newer; found 1.22.5: install Go 1.26.8"),
        ("1.25.0", None),
        ("1.26.8", None),
    ],
)
def test_the_go_floor_is_the_modules_own_and_said_exactly(found, said):
    lock = toollock.load()
    cosign = Tool("cosign", "m", "v2.6.5", "1.25.0", "")
    problem = toollock.floor_problem(cosign, found, lock)
    assert (problem if problem is None else problem.split(" (")[0]) == said


def test_go_version_reads_what_go_prints():
    assert toollock.go_version("go version go1.26.8 linux/amd64") == "1.26.8"
    assert toollock.go_version("go version go1.22 linux/arm64") == "1.22"
    assert toollock.go_version("nothing") is None


def test_a_tampered_cached_binary_is_refused_and_not_used(tmp_path):
    lock = lock_of(tmp_path)
    bad = cached(tmp_path, GOOD + b"# evil\n")
    said: list[str] = []
    runner = Runner(out=said.append, environ={"PATH": "/nonexistent"})
    outcome = gotools.make_ready(runner, lock, lock.tools["tiny"], places(tmp_path), go=None)
    assert outcome == "missing"  # no Go here to rebuild it: the tool is missing, not the bad one used
    expected = lock.tools["tiny"].sha256[toollock.platform()]
    actual = hashlib.sha256(GOOD + b"# evil\n").hexdigest()
    assert (
        said[0] == f"tiny: refused {bad}: sha256 {actual[:16]}…, the lock says {expected[:16]}…; rebuilding"
    )
    assert "tiny v1.2.3 needs Go 1.22 or newer; no `go` on PATH" in said[1]
    assert not bad.exists() and not (tmp_path / "bin" / "tiny").exists()


def test_a_cached_binary_with_the_locks_hash_is_restored_without_go(tmp_path):
    lock = lock_of(tmp_path)
    cached(tmp_path, GOOD)
    said: list[str] = []
    runner = Runner(out=said.append, environ={"PATH": "/nonexistent"})
    assert gotools.make_ready(runner, lock, lock.tools["tiny"], places(tmp_path), go=None) == "restored"
    assert (tmp_path / "bin" / "tiny").read_bytes() == GOOD
    assert gotools.make_ready(runner, lock, lock.tools["tiny"], places(tmp_path), go=None) == "present"


def test_an_installed_binary_that_is_not_the_locks_is_named_and_replaced(tmp_path):
    lock = lock_of(tmp_path)
    cached(tmp_path, GOOD)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "tiny").write_bytes(b"an older build")
    said: list[str] = []
    runner = Runner(out=said.append, environ={"PATH": "/nonexistent"})
    assert gotools.make_ready(runner, lock, lock.tools["tiny"], places(tmp_path), go=None) == "restored"
    assert said[0].startswith(f"tiny: refused {tmp_path / 'bin' / 'tiny'}: sha256 ")
    assert (tmp_path / "bin" / "tiny").read_bytes() == GOOD


def test_a_dry_run_shows_the_go_install_with_the_locks_flags(tmp_path):
    lock = lock_of(tmp_path)
    said: list[str] = []
    runner = Runner(dry_run=True, out=said.append, environ={"PATH": "/nonexistent"})
    assert gotools.make_ready(runner, lock, lock.tools["tiny"], places(tmp_path), go="1.26.8") == "built"
    shown = "\n".join(said)
    assert "go install -trimpath example.com/tiny/cmd/tiny@v1.2.3" in shown and "CGO_ENABLED=0" in shown
    assert gotools.prepare(runner, lock, places(tmp_path)) == {"tiny": "missing"}  # no go on PATH
    assert not (tmp_path / "bin").exists() and not (tmp_path / "state").exists()  # no lock files either


def test_a_tool_being_prepared_is_coming_and_waited_for(tmp_path):
    environ = {"HOME": str(tmp_path)}
    assert not gotools.preparing(environ, "cosign")
    gotools.wait_ready(environ, "cosign", print)  # nothing prepares it: returns at once
    path = gotools.lock_path(gotools.state_dir(environ), "cosign")
    path.parent.mkdir(parents=True)
    held = FileLock(str(path))
    state.begin_command()
    with held:
        assert gotools.preparing(environ, "cosign")
        said: list[str] = []
        gotools.wait_ready(environ, "cosign", said.append, timeout=0.2)
        assert said and said[0].startswith("waiting for cosign: `invoke setup` is still preparing it")
        gotools.wait_ready(environ, "cosign", said.append, timeout=0.2)  # the next image's wait
        assert len(said) == 1  # said once per command
        state.begin_command()
        gotools.wait_ready(environ, "cosign", said.append, timeout=0.2)
        assert len(said) == 2
    assert not gotools.preparing(environ, "cosign")


def test_setup_says_the_go_floor_before_it_goes_to_the_background(tmp_path):
    from moltbuild.flows import install

    lock = lock_of(tmp_path, go_min="1.25.0")
    runner = Runner(out=lambda _: None, environ={"PATH": "/nonexistent"})
    said = install.warn_go_floor(runner, lock, places(tmp_path))
    assert said == [
        "tiny v1.2.3 needs Go 1.25.0 or newer; no `go` on PATH: install Go 1.26.8 "
        "(the lock's hashes are of builds with it): https://go.dev/dl/"
    ]
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "tiny").write_bytes(GOOD)  # already there: no Go needed
    assert install.warn_go_floor(runner, lock, places(tmp_path)) == []
