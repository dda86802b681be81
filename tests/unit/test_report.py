import json
import threading

import pytest

from moltbuild import report
from moltbuild.errors import ConfigError
from moltbuild.report import ImageRecord, Outcome
from tests.unit.records import DIGEST, image_record, raw_entry


def raw(name, **kw):
    return raw_entry(name, **({"repository": f"reg.example:5000/ns/{name}"} | kw))


def record(name, **kw) -> ImageRecord:
    return image_record(raw(name, **kw))


def write(path, *entries, version=1):
    path.write_text(json.dumps({"version": version, "images": list(entries)}))


def test_updates_merge_by_name_and_keep_the_schema(tmp_path):
    path = tmp_path / "build" / "images.json"
    report.update(path, record("api"))
    report.update(path, record("frontend"))
    report.update(path, record("api", pushed=True, digest=DIGEST, status="pushed"))
    data = json.loads(path.read_text())
    assert data["version"] == 1
    assert [(e["name"], e["pushed"], e["pin_tag"]) for e in data["images"]] == [
        ("api", True, "sha-abc1234"),
        ("frontend", False, "sha-abc1234"),
    ]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".images.json.")]
    assert [r.name for r in report.read(path)] == ["api", "frontend"]


def test_reports_of_the_previous_version_still_read(tmp_path):
    path = tmp_path / "images.json"
    old = raw("api", pushed=True, digest=DIGEST, status="pushed")
    write(path, old, {k: v for k, v in raw("fe").items() if k not in ("status", "skipped", "image_id")})
    api, fe = report.read(path)
    assert (
        api.pin_tag == "sha-abc1234" and api.outcome is Outcome.PUSHED and api.ref.host == "reg.example:5000"
    )
    assert fe.outcome is Outcome.BUILT and fe.image_id is None


def test_an_old_report_that_says_built_after_a_failed_push_reads_as_push_failed_and_is_rewritten(tmp_path):
    path = tmp_path / "images.json"
    # as versions with `status` wrote it: "built" for a build whose push failed
    write(path, raw("api", status="built", push=True, error="push of api failed: HTTP 500"), raw("fe"))
    api, fe = report.read(path)
    assert api.outcome is Outcome.PUSH_FAILED and not api.pushed and api.image_id
    assert fe.outcome is Outcome.BUILT
    report.update(path, fe.but(duration_s=2.0))  # any update rewrites the file in the new form
    written = json.loads(path.read_text())["images"]
    assert [(e["outcome"], e["pushed"]) for e in written] == [("push failed", False), ("built", False)]
    assert not any("status" in e or "skipped" in e for e in written)
    assert report.read(path) == [api, fe.but(duration_s=2.0)]


def test_concurrent_updates_lose_nothing(tmp_path):
    path = tmp_path / "images.json"
    threads = [threading.Thread(target=report.update, args=(path, record(f"img{i}"))) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(report.read(path)) == 12


@pytest.mark.parametrize(
    "changes, fragment",
    [
        (
            {"outcome": "done"},
            r"images\[0\]\.outcome: must be built or pushed or reused or push failed or failed",
        ),
        (
            {"outcome": "pushed", "pushed": False, "digest": DIGEST},
            r"images\[0\]\.pushed: says false, but the outcome",
        ),
        ({"outcome": "failed"}, r"images\[0\]\.error: an image that failed needs its error"),
        ({"outcome": "built", "error": "x"}, r"images\[0\]\.error: only a failure has one"),
        ({"outcome": "reused", "pushed": True}, r"images\[0\]\.digest: a pushed image needs its digest"),
        ({"digest": "12"}, r"images\[0\]\.digest: must be sha256:<hex> or null"),
        ({"tags": "main"}, r"images\[0\]\.tags: must be a list of tags"),
        ({"tags": ["main", "bad tag"]}, r"images\[0\]\.tags: must be a list of tags"),
        ({"pushed": "yes"}, r"images\[0\]\.pushed: must be true or false"),
        ({"repository": "Reg/UPPER"}, r"images\[0\]\.repository 'Reg/UPPER' is not a valid image reference"),
        ({"pushed": True, "status": "pushed"}, r"images\[0\]\.digest: a pushed image needs its digest"),
        ({"pin_tag": "other"}, r"images\[0\]\.pin_tag: must be one of the tags"),
    ],
)
def test_hand_edited_entries_fail_naming_file_and_field(tmp_path, changes, fragment):
    path = tmp_path / "images.json"
    write(path, raw("api", **changes))
    with pytest.raises(ConfigError, match=r"images\.json: " + fragment) as err:
        report.read(path)
    assert len(err.value.message.splitlines()) == 1


def test_a_missing_field_and_one_line_per_problem(tmp_path):
    path = tmp_path / "images.json"
    entry = raw("api", outcome="?")
    del entry["input_digest"]
    write(path, entry)
    with pytest.raises(ConfigError) as err:
        report.read(path)
    lines = err.value.message.splitlines()
    assert len(lines) == 2 and "images[0].input_digest: missing" in lines[0] and ".outcome" in lines[1]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('{"version": 1, "images": [{"name": "api"', "not valid JSON"),
        ('{"images": []}', "not a version 1 build report"),
        ("[]", "not a version 1 build report"),
    ],
)
def test_truncated_or_foreign_report_names_the_file(tmp_path, text, fragment):
    path = tmp_path / "images.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"images\.json: {fragment}"):
        report.read(path)


def test_require_says_not_found_and_a_dry_recorder_writes_nothing(tmp_path):
    path = tmp_path / "images.json"
    with pytest.raises(ConfigError, match=r"images\.json not found; run `invoke build` first"):
        report.require(path)
    recorder = report.Recorder(path, dry_run=True)
    recorder(record("api"))
    assert recorder.written and not path.exists()


@pytest.mark.parametrize(
    "changes, outcome",
    [
        ({}, report.Outcome.BUILT),
        ({"pushed": True, "digest": DIGEST, "status": "pushed", "push": True}, report.Outcome.PUSHED),
        ({"pushed": True, "digest": DIGEST, "status": "pushed", "skipped": True}, report.Outcome.REUSED),
        ({"error": "push refused", "push": True}, report.Outcome.PUSH_FAILED),  # built: push can retry
        ({"error": "build failed", "image_id": None, "status": "failed"}, report.Outcome.FAILED),
        ({"error": "smoke failed"}, report.Outcome.FAILED),  # a local build that failed its check
    ],
)
def test_one_outcome_per_image_read_back_the_same(tmp_path, changes, outcome):
    rec = record("api", **changes)
    assert rec.outcome is outcome
    assert rec.ok is (outcome in (report.Outcome.BUILT, report.Outcome.PUSHED, report.Outcome.REUSED))
    path = tmp_path / "images.json"
    report.update(path, rec)
    (again,) = report.read(path)
    assert again.outcome is outcome
    assert json.loads(path.read_text())["images"][0]["outcome"] == outcome.value


def test_a_failed_push_is_not_ok_and_a_later_failure_without_an_image_keeps_it(tmp_path):
    path = tmp_path / "images.json"
    report.update(path, record("api", error="push refused", push=True))
    report.update(path, record("api", error="build failed", image_id=None, status="failed"))
    (kept,) = report.read(path)
    assert kept.outcome is report.Outcome.PUSH_FAILED and not kept.ok and kept.image_id


def test_a_record_cannot_contradict_itself():
    good = record("api", pushed=True, digest=DIGEST)
    with pytest.raises(ValueError, match="a pushed image needs its digest"):
        good.but(digest=None)
    with pytest.raises(ValueError, match="an image that failed needs its error"):
        good.but(outcome=Outcome.PUSH_FAILED)
    with pytest.raises(ValueError, match="only a failure has one"):
        good.but(error="boom")
    assert good.pushed and good.but(outcome=Outcome.BUILT).pushed is False


def test_a_file_without_outcome_or_pushed_names_the_missing_outcome(tmp_path):
    path = tmp_path / "images.json"
    write(path, {k: v for k, v in raw("api").items() if k not in ("pushed", "status")})
    with pytest.raises(ConfigError, match=r"images\[0\]\.outcome: missing"):
        report.read(path)
