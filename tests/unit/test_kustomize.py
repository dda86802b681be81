import difflib
import json
import multiprocessing
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from moltbuild import report
from moltbuild.errors import ConfigError
from moltbuild.k8s import kustomize
from moltbuild.k8s.kustomize import Pin, set_images, yaml_string
from tests.unit.records import pushed_entry

ROOT = Path(__file__).resolve().parents[2]
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
API = "ghcr.io/ardenone/moltbook-api"
FE = "ghcr.io/ardenone/moltbook-frontend"


@pytest.fixture()
def kust(tmp_path) -> Path:
    path = tmp_path / "kustomization.yml"
    path.write_text((ROOT / "k8s" / "kustomization.yml").read_text())
    return path


def load(path: Path) -> dict:
    return {e["name"]: e for e in YAML(typ="safe").load(path.read_text())["images"]}


def test_pins_tag_and_digest_and_keeps_comments_order_and_other_entries(kust):
    before = kust.read_text()
    text = before.replace("images:\n", "images:\n  - name: nginx  # keep me\n    newTag: '1.27'\n")
    kust.write_text(text)
    lines: list[str] = []
    changed = set_images(
        kust, [Pin(API, "127.0.0.1:5000/ns/moltbook-api", "sha-abc1234", D1)], say=lines.append
    )
    assert changed == [f"{API} -> 127.0.0.1:5000/ns/moltbook-api:sha-abc1234@{D1}"]
    after = kust.read_text()
    assert (
        "# Pinned by `invoke k8s.set-images`" in after
        and "  - name: nginx  # keep me\n    newTag: '1.27'" in after
    )
    images = load(kust)
    assert list(images) == ["nginx", API, FE]
    assert images[API] == {
        "name": API,
        "newName": "127.0.0.1:5000/ns/moltbook-api",
        "newTag": "sha-abc1234",
        "digest": D1,
    }
    assert images[FE]["newTag"] == "latest"  # untouched
    # exactly the api entry's lines changed, nothing else in the file
    diff = [line for line in difflib.ndiff(text.splitlines(), after.splitlines()) if line[:2] in ("- ", "+ ")]
    assert sorted(diff) == sorted(
        [
            f"-     newName: {API}",
            "-     newTag: latest",
            "+     newName: 127.0.0.1:5000/ns/moltbook-api",
            "+     newTag: sha-abc1234",
            f"+     digest: {D1}",
        ]
    )


@pytest.mark.parametrize(
    "tag", ["0012345", "1234e56", "1234567", "true", "0x1f", "1_000", "12:30", "sha-0012345"]
)
def test_tags_that_look_like_numbers_stay_strings(kust, tag):
    set_images(kust, [Pin(FE, "r.example/ns/fe", tag, None)], say=lambda _: None)
    assert load(kust)[FE]["newTag"] == tag
    assert YAML(typ="base").load(kust.read_text())["images"][1]["newTag"] == tag
    assert isinstance(yaml_string(tag), str) and str(yaml_string(tag)) == tag


def test_adds_a_missing_entry_and_a_second_run_changes_nothing(kust, tmp_path):
    pin = Pin("ghcr.io/ardenone/moltbook-worker", "r.example/ns/worker", "sha-abc1234", D2)
    assert set_images(kust, [pin], say=lambda _: None)
    first = kust.read_text()
    said: list[str] = []
    assert set_images(kust, [pin], say=said.append) == []
    assert kust.read_text() == first and "nothing to change" in said[0]
    assert load(kust)[pin.name]["digest"] == D2


def test_no_digest_drops_a_stale_digest(kust):
    set_images(kust, [Pin(API, API, "sha-abc1234", D1)], say=lambda _: None)
    set_images(kust, [Pin(API, API, "sha-def5678", None)], say=lambda _: None)
    assert "digest" not in load(kust)[API] and load(kust)[API]["newTag"] == "sha-def5678"


def test_dry_run_prints_a_unified_diff_and_writes_nothing(kust):
    before = kust.read_text()
    out: list[str] = []
    set_images(kust, [Pin(API, API, "sha-abc1234", D1)], dry_run=True, say=out.append)
    assert kust.read_text() == before
    diff = out[0].splitlines()
    assert diff[0].startswith("---") and "-    newTag: latest" in diff and "+    newTag: sha-abc1234" in diff
    assert f"+    digest: {D1}" in diff


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("images: [\n", r"kustomization\.yml:\d+: invalid YAML"),
        ("- a\n", "not a kustomization"),
        ("images: {a: 1}\n", "must be a list"),
    ],
)
def test_bad_kustomization_is_one_line_and_untouched(kust, text, fragment):
    kust.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        set_images(kust, [Pin(API, API, "t", None)], say=lambda _: None)
    assert kust.read_text() == text


def _pin_one(path: str, name: str, digest: str) -> None:
    for _ in range(20):
        set_images(Path(path), [Pin(name, name, f"sha-{digest[7:14]}", digest)], say=lambda _: None)


def test_concurrent_runs_one_per_image_keep_both_updates(kust):
    procs = [
        multiprocessing.get_context("fork").Process(target=_pin_one, args=(str(kust), name, digest))
        for name, digest in ((API, D1), (FE, D2))
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    images = load(kust)
    assert images[API]["digest"] == D1 and images[FE]["digest"] == D2


def record(name, **kw):
    return pushed_entry(name, **({"digest": D1} | kw))


def test_failed_or_unpushed_images_are_never_pinned(tmp_path):
    path = tmp_path / "images.json"
    failed = record("frontend", pushed=False, digest=None, status="failed", error="boom")
    path.write_text(json.dumps({"version": 1, "images": [record("api"), failed]}))
    assert [r.name for r in kustomize.pushed_records(path)] == ["api"]
    with pytest.raises(ConfigError, match="frontend was not pushed"):
        kustomize.pushed_records(path, "frontend")
    with pytest.raises(ConfigError, match="no image named 'web'"):
        kustomize.pushed_records(path, "web")
    path.write_text(json.dumps({"version": 1, "images": [failed]}))
    with pytest.raises(ConfigError, match="records no pushed image"):
        kustomize.pushed_records(path)
    assert report.read(path)[0].status == "failed"
