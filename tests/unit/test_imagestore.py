"""The ledger's pruning rules and its run lock (real flock between two processes)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from moltbuild.backends.imagestore import ImageStore, StoredImage, _depth, _needed, _parse_size


def chain(*specs: tuple[str, str, tuple[str, ...]]) -> dict[str, StoredImage]:
    return {i: StoredImage(i, parent, names) for i, parent, names in specs}


def test_named_images_and_their_whole_chain_are_needed_nothing_else():
    images = chain(
        ("base", "", ("docker.io/library/python:3.12-slim",)),
        ("a1", "base", ()),
        ("a2", "a1", ()),
        ("a3", "a2", ("reg/ns/api:sha-new",)),
        ("old1", "base", ()),
        ("old2", "old1", ()),  # a superseded build: no name left
        ("stray", "", ()),
    )
    assert _needed(images) == {"base", "a1", "a2", "a3"}
    assert _depth(images, "old2") == 2
    assert sorted(set(images) - _needed(images), key=lambda i: -_depth(images, i))[0] == "old2"


@pytest.mark.parametrize(
    "text, size",
    [("1.04 kB", 1040), ("12.3MB", 12_300_000), ("2 GB", 2_000_000_000), ("0B", 0), ("junk", 0)],
)
def test_sizes_as_podman_and_docker_print_them(text, size):
    assert _parse_size(text) == size


def _hold(state_dir: str, ready, release) -> None:
    with ImageStore(None, Path(state_dir)).exclusive("invoke build --push", print):  # type: ignore[arg-type]
        ready.set()
        release.wait(30)


def test_a_second_run_on_the_store_names_the_holder_and_waits(tmp_path):
    from moltbuild.errors import MoltbuildError

    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold, args=(str(tmp_path), ready, release))
    other.start()
    said: list[str] = []
    try:
        assert ready.wait(30)
        store = ImageStore(None, tmp_path)  # type: ignore[arg-type]
        with (
            pytest.raises(MoltbuildError, match=rf"in use by pid {other.pid} \(`invoke build --push`"),
            store.exclusive("invoke clean", said.append, timeout=0.3),
        ):
            pass
        assert said and said[0].startswith(f"waiting: pid {other.pid} (`invoke build --push`")
    finally:
        release.set()
        other.join(30)
    assert other.exitcode == 0
    with ImageStore(None, tmp_path).exclusive("invoke clean", said.append):  # type: ignore[arg-type]
        pass  # free again once the holder is gone


def test_ledger_survives_garbage_and_records_atomically(tmp_path):
    store = ImageStore(None, tmp_path)  # type: ignore[arg-type]
    assert store.ledger() == set()
    (tmp_path / "created.json").write_text("{not json")
    assert store.ledger() == set()
    store._write_ledger({"b", "a"})
    assert store.ledger() == {"a", "b"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
