"""invoke dev, pure parts: which image a changed path feeds (.dockerignore as the builds read it),
sync rules (parsing and matching), batching, sync-or-rebuild per image."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from moltbuild.dev.watch import Batches, WatchedImage, by_image, classify, glob_regex, sync_plan
from moltbuild.errors import ConfigError
from moltbuild.project import ImageConfig, sync_rules


def _image(tmp_path: Path, name: str, files: dict[str, str], sync=()) -> WatchedImage:
    context = tmp_path / name
    for rel, text in files.items():
        (context / rel).parent.mkdir(parents=True, exist_ok=True)
        (context / rel).write_text(text)
    cfg = ImageConfig(name, name, context, context / "Dockerfile", sync=tuple(sync))
    return WatchedImage.of(cfg)


@pytest.fixture()
def images(tmp_path):
    api = _image(
        tmp_path,
        "svc",
        {
            "Dockerfile": "FROM x\n",
            ".dockerignore": "tests/\n*.md\n!KEEP.md\n",
            "app.py": "",
            "tests/t.py": "",
        },
    )
    web = _image(
        tmp_path,
        "web",
        {
            "Dockerfile": "FROM x\n",
            "src/a.css": "",
            "src/deep/b.css": "",
            "src/app.js": "",
            "src/config.js.in": "",
        },
        sync=[("src/*.css", "/www/"), ("src/**/*.css", "/www/"), ("src/app.js", "/www/")],
    )
    return {"svc": api, "web": web}


def test_a_path_belongs_to_the_image_whose_context_sends_it(images, tmp_path):
    svc = tmp_path / "svc"
    grouped = by_image(
        [svc / "app.py", svc / "tests" / "t.py", svc / "README.md", svc / "KEEP.md", svc / "Dockerfile"],
        images.values(),
    )
    assert grouped == {"svc": [svc / "Dockerfile", svc / "KEEP.md", svc / "app.py"]}


def test_the_dockerignore_itself_and_a_deleted_file_count(images, tmp_path):
    svc = tmp_path / "svc"
    assert by_image([svc / ".dockerignore", svc / "gone.py"], images.values()) == {
        "svc": [svc / ".dockerignore", svc / "gone.py"]
    }


def test_a_path_outside_every_context_is_dropped(images, tmp_path):
    assert by_image([tmp_path / "elsewhere.py", tmp_path / "svc-other" / "x"], images.values()) == {}


def test_sync_globs_keep_the_path_below_their_fixed_directories(images, tmp_path):
    web = images["web"]
    assert web.destination(tmp_path / "web/src/a.css") == "/www/a.css"
    assert web.destination(tmp_path / "web/src/deep/b.css") == "/www/deep/b.css"
    assert web.destination(tmp_path / "web/src/app.js") == "/www/app.js"
    assert web.destination(tmp_path / "web/src/config.js.in") is None  # generated at build: rebuild
    assert web.destination(tmp_path / "web/Dockerfile") is None


def test_glob_stars_stay_in_one_directory_unless_doubled():
    assert glob_regex("src/*.css").match("src/a.css")
    assert not glob_regex("src/*.css").match("src/x/a.css")
    assert glob_regex("src/**/*.css").match("src/a.css")
    assert glob_regex("src/**/*.css").match("src/x/y/a.css")
    assert not glob_regex("src/?.css").match("src/ab.css")


def test_classify_syncs_only_when_every_path_matches_and_the_image_runs(images, tmp_path):
    web, svc = tmp_path / "web", tmp_path / "svc"
    grouped = by_image([web / "src/a.css", svc / "app.py"], images.values())
    sync, rebuild = classify(grouped, images, running={"web", "svc"})
    assert sync == {"web": [(web / "src/a.css", "/www/a.css")]} and rebuild == ["svc"]

    mixed = by_image([web / "src/a.css", web / "src/config.js.in"], images.values())
    assert classify(mixed, images, running={"web"}) == ({}, ["web"])
    assert classify(by_image([web / "src/a.css"], images.values()), images, running=()) == ({}, ["web"])


def test_a_deleted_synced_file_rebuilds(images, tmp_path):
    assert sync_plan(images["web"], [tmp_path / "web/src/gone.css"]) is None


def test_changes_that_land_while_the_loop_is_busy_make_one_batch():
    batches = Batches()
    batches.put([Path("/a")])
    batches.put([Path("/b"), Path("/a")])
    assert batches.next(timeout=0.1) == {Path("/a"), Path("/b")}
    assert batches.next(timeout=0.05) == set()
    threading.Timer(0.05, lambda: batches.put([Path("/c")])).start()
    start = time.monotonic()
    assert batches.next(timeout=2) == {Path("/c")}
    assert time.monotonic() - start < 1


@pytest.mark.parametrize(
    ("dev", "error"),
    [
        ("no", "dev must be a table"),
        ({"copy": {}}, "[tool.moltbuild.images.web.dev] has unknown key 'copy'; allowed: sync"),
        ({"sync": ["src/*.css"]}, "[tool.moltbuild.images.web.dev] sync must be a table"),
        ({"sync": {"/abs/*.css": "/www/"}}, "sync key '/abs/*.css' must be a glob relative to the context"),
        ({"sync": {"../x/*.css": "/www/"}}, "sync key '../x/*.css' must be a glob relative"),
        ({"sync": {"src/*.css": "www/"}}, "the destination must be an absolute directory"),
        ({"sync": {"src/*.css": 3}}, "the destination must be an absolute directory"),
    ],
)
def test_a_bad_sync_rule_is_one_line_naming_the_key(dev, error):
    with pytest.raises(ConfigError) as exc:
        sync_rules("web", dev)
    assert error in exc.value.message and "\n" not in exc.value.message


def test_sync_rules_read_from_the_image_table(tmp_path):
    from moltbuild.project import load_images

    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "Dockerfile").write_text("FROM x\n")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.moltbuild.images.web]\nrepository = "web"\ncontext = "web"\n'
        '[tool.moltbuild.images.web.dev]\nsync = { "src/*.css" = "/www/" }\n'
    )
    assert load_images(tmp_path)["web"].sync == (("src/*.css", "/www/"),)


def test_a_file_created_and_gone_within_a_batch_is_no_change(tmp_path):
    from watchfiles import Change

    from moltbuild.dev.watch import settled

    app, temp, gone = tmp_path / "app.py", tmp_path / "sedFQtvKj", tmp_path / "old.py"
    app.write_text("x")
    changes = {
        (Change.added, str(temp)),
        (Change.modified, str(temp)),
        (Change.deleted, str(temp)),  # sed -i's temp file: written, renamed over app.py
        (Change.added, str(app)),
        (Change.deleted, str(gone)),  # a real deletion stays a change
    }
    assert sorted(settled(changes)) == sorted([app, gone])
    temp.write_text("kept")  # created, deleted, created again: there now, so a change
    assert temp in settled({(Change.added, str(temp)), (Change.deleted, str(temp))})
