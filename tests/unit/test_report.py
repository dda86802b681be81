import json
import threading

import pytest

from moltbuild import report
from moltbuild.errors import ConfigError


def entry(name, **kw):
    base = {
        "name": name,
        "repository": f"r/{name}",
        "tags": ["t"],
        "digest": None,
        "input_digest": "sha256:1",
        "backend": "buildah",
        "pushed": False,
        "platforms": [],
        "duration_s": 1.0,
    }
    return base | kw


def test_updates_merge_by_name_and_keep_the_schema(tmp_path):
    path = tmp_path / "build" / "images.json"
    report.update_image(path, entry("api"))
    report.update_image(path, entry("frontend"))
    report.update_image(path, entry("api", pushed=True, digest="sha256:2"))
    data = json.loads(path.read_text())
    assert data["version"] == 1
    assert [(e["name"], e["pushed"]) for e in data["images"]] == [("api", True), ("frontend", False)]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".images.json.")]


def test_concurrent_updates_lose_nothing(tmp_path):
    path = tmp_path / "images.json"
    threads = [threading.Thread(target=report.update_image, args=(path, entry(f"img{i}"))) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(report.entries(path)) == 12


def test_incomplete_entry_is_refused(tmp_path):
    with pytest.raises(ValueError, match="lacks"):
        report.update_image(tmp_path / "r.json", {"name": "x"})


def test_corrupt_report_names_the_file(tmp_path):
    path = tmp_path / "images.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"images\.json: not valid JSON"):
        report.read(path)
