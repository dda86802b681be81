"""Report entries for unit tests: as the previous version of moltbuild wrote them (no pin_tag)."""

from __future__ import annotations

from moltbuild import report
from moltbuild.report import ImageRecord

DIGEST = "sha256:" + "2" * 64
INPUT = "sha256:" + "1" * 64


def raw_entry(name: str, **changes) -> dict:
    """A built, not pushed entry; `changes` override any field (pushed=True wants a digest)."""
    base = {
        "name": name,
        "repository": f"reg.example:5000/ns/moltbook-{name}",
        "tags": ["sha-abc1234", "main"],
        "digest": None,
        "input_digest": INPUT,
        "backend": "buildah",
        "pushed": False,
        "platforms": ["linux/amd64"],
        "duration_s": 1.0,
        "skipped": False,
        "status": "built",
        "image_id": "e" * 64,
        "revision": "a" * 40,
        "backend_reason": "auto picked buildah",
    }
    return base | changes


def pushed_entry(name: str, **changes) -> dict:
    return raw_entry(name, **({"pushed": True, "digest": DIGEST, "status": "pushed"} | changes))


def image_record(entry: dict) -> ImageRecord:
    rec, problems = report.record_from_dict(entry, "test")
    assert not problems, problems
    return rec
