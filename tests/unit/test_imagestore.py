"""The ledger's pruning rules and its run lock (real flock between two processes)."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from pathlib import Path

import pytest

from moltbuild.backends.imagestore import ImageStore, Owner, StoredImage, _depth, _needed, _parse_size


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


# -- several checkouts on one store ------------------------------------------------------------


def _checkout(tmp_path: Path, name: str, image_id: str | None) -> Owner:
    """A checkout whose build report names `image_id` (None: no report at all)."""
    from moltbuild import report
    from tests.unit.records import image_record, raw_entry

    root = tmp_path / name
    root.mkdir()
    owner = Owner.of(root)
    if image_id:
        report.update(Path(owner.report), image_record(raw_entry("api", image_id=image_id)))
    return owner


def _shared(tmp_path: Path) -> tuple[dict[str, StoredImage], Owner, Owner]:
    """A built a1 (not pushed); B then built b1 and b2 on the same base: a1 lost its names."""
    images = chain(
        ("base", "", ("docker.io/library/python:3.12-slim",)),
        ("a0", "base", ()),
        ("a1", "a0", ()),
        ("b1", "base", ("reg/ns/api:sha-old",)),
        ("b2", "base", ("reg/ns/api:sha-new",)),
    )
    a, b = _checkout(tmp_path, "a", "a1"), _checkout(tmp_path, "b", "b2")
    ImageStore(None, tmp_path / "state", a).record(images, ["a1"])  # type: ignore[arg-type]
    ImageStore(None, tmp_path / "state", b).record(images, ["b1", "b2"])  # type: ignore[arg-type]
    return images, a, b


def test_the_ledger_records_which_checkout_recorded_each_image(tmp_path):
    _, a, b = _shared(tmp_path)
    store = ImageStore(None, tmp_path / "state", b)  # type: ignore[arg-type]
    assert store.ledger() == {"a0", "a1", "b1", "b2"}
    assert store.owners() == {"a0": {a}, "a1": {a}, "b1": {b}, "b2": {b}}
    store.claim(["a1"])  # B's build was a full cache hit on A's image: B needs it too
    assert store.owners()["a1"] == {a, b}


def test_pruning_keeps_what_another_checkouts_report_still_names(tmp_path):
    images, _, b = _shared(tmp_path)
    store = ImageStore(None, tmp_path / "state", b)  # type: ignore[arg-type]
    assert store.protected(images) == {"a1", "a0", "base", "b2"}
    assert store.doomed(images) == []  # a1 and a0 lost their names, but A's report names a1
    assert set(store.doomed(images, everything=True)) == {"b1", "b2"}  # B's own: all of them


def test_a_checkout_that_is_gone_or_no_longer_names_its_image_protects_nothing(tmp_path):
    images, a, b = _shared(tmp_path)
    store = ImageStore(None, tmp_path / "state", b)  # type: ignore[arg-type]
    Path(a.report).unlink()  # A's report no longer names a1 (no report at all)
    assert set(store.doomed(images)) == {"a1", "a0"}
    Path(a.report).parent.mkdir(parents=True, exist_ok=True)
    Path(a.report).write_text("{not json")  # unreadable: every image A recorded stays
    assert store.doomed(images) == []
    shutil.rmtree(a.root)  # the checkout itself is gone
    assert set(store.doomed(images)) == {"a1", "a0"}


def test_superseding_never_untags_another_checkouts_image(tmp_path):
    images, _, b = _shared(tmp_path)
    images["a1"] = StoredImage("a1", "a0", ("reg/ns/api:sha-aaa",))

    class Runtime:
        argv = ["podman"]
        calls: list[tuple] = []

        def __call__(self, *args, **kw):
            self.calls.append(args)
            return type("R", (), {"ok": True, "stdout": ""})()

    rt = Runtime()
    store = ImageStore(rt, tmp_path / "state", b)  # type: ignore[arg-type]
    after = store._supersede(images, {"reg/ns/api": {"reg/ns/api:sha-new"}})
    assert rt.calls == [("untag", "b1", "reg/ns/api:sha-old")]
    assert after["a1"].names == ("reg/ns/api:sha-aaa",) and after["b1"].names == ()


def test_a_dead_runs_marker_names_the_containers_it_left(tmp_path):
    store = ImageStore(None, tmp_path, Owner("/x", "/x/r"))  # type: ignore[arg-type]
    store.begin_run({"old"})
    marker = tmp_path / "runs" / f"{os.getpid()}.json"
    assert store.left_by_dead_runs({"old", "new"}) == (set(), [])  # this run is alive
    dead = tmp_path / "runs" / "1.json"
    dead.write_text(json.dumps({"owner": "999999999.1", "containers": ["old"]}))
    assert store.left_by_dead_runs({"old", "new"}) == ({"new"}, [dead])
    store.end_run()
    assert not marker.exists()


def test_owner_tokens_and_temp_dirs_of_dead_processes(tmp_path):
    from moltbuild.system import owners

    assert owners.alive(owners.token())
    assert not owners.alive("999999999.1")
    pid, start = owners.token().split(".")
    assert not owners.alive(f"{pid}.{int(start) + 1}")  # the pid, reused by another process
    mine = tmp_path / f"{owners.PREFIX}{owners.token()}-x"
    dead = tmp_path / f"{owners.PREFIX}999999999.1-y"
    other = tmp_path / "moltbuild-run-abc"  # buildah's runroot: never a reaped name
    for path in (mine, dead, other):
        path.mkdir()
    (dead / "auth.json").write_text("{}")
    assert owners.reap_temp_dirs(str(tmp_path)) == [dead]
    assert mine.is_dir() and other.is_dir() and not dead.exists()
