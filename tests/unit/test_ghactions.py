import json

from moltbuild.ci import actions as ghactions
from tests.unit.records import image_record, pushed_entry

D = "sha256:" + "d" * 64


def record(name, **kw):
    changes = {"repository": f"ghcr.io/ardenone/moltbook-{name}", "digest": D, "duration_s": 12.34}
    return image_record(pushed_entry(name, **(changes | kw)))


def test_summary_and_outputs_are_written_only_where_github_says(tmp_path):
    summary, output = tmp_path / "summary.md", tmp_path / "output"
    records = [
        record("api", skipped=True),
        record("frontend", digest=None, pushed=False, status="failed", error="boom\nmore"),
    ]
    ghactions.publish("moltbuild: build and push (docker)", records, {})
    assert not summary.exists() and not output.exists()
    env = {"GITHUB_STEP_SUMMARY": str(summary), "GITHUB_OUTPUT": str(output)}
    ghactions.publish("moltbuild: build and push (docker)", records, env)
    text = summary.read_text()
    assert "### moltbuild: build and push (docker)" in text
    assert f"| api | `sha-abc1234`, `main` | `ghcr.io/ardenone/moltbook-api@{D}` | reused | 12.3s |" in text
    assert "| frontend |" in text and "FAILED: boom |" in text and "more" not in text
    lines = dict(line.split("=", 1) for line in output.read_text().splitlines())
    assert lines["api-digest"] == D and lines["frontend-digest"] == "" and lines["pushed"] == "true"
    assert lines["images"] == "api"
    report = json.loads(lines["report"])
    assert [i["name"] for i in report["images"]] == ["api", "frontend"] and report["version"] == 1
