"""A full disk for real: a tiny tmpfs holds build/; the report and a build log that cannot be
written are one line naming the file and the fix, never a moltbuild bug."""

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from moltbuild import report
from moltbuild.errors import ConfigError
from moltbuild.system.processes import Runner
from tests.conftest import need_root
from tests.unit.records import image_record, pushed_entry


@pytest.fixture()
def full_build_dir(tmp_path) -> Iterator[Path]:
    need_root()
    build = tmp_path / "build"
    build.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(build)], check=False)
    assert mounted.returncode == 0, "mount -t tmpfs failed"
    try:
        (build / "logs").mkdir()
        (build / "logs" / "api.log").touch()
        with (build / "filler").open("wb", buffering=0) as fh:  # every block taken
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError:
                pass
        yield build
    finally:
        subprocess.run(["umount", str(build)], check=False)


def test_the_report_on_a_full_disk_names_it(full_build_dir):
    path = full_build_dir / "images.json"
    with pytest.raises(ConfigError, match=rf"^{path}: cannot write \(the disk is full\); free space there"):
        report.update(path, image_record(pushed_entry("api")))
    assert not [p for p in full_build_dir.iterdir() if p.name.startswith(".images.json.")]  # no temporary
    assert not path.exists()


def test_a_build_log_on_a_full_disk_names_it_and_the_command_runs_to_its_end(full_build_dir, tmp_path):
    log = full_build_dir / "logs" / "api.log"
    marker = tmp_path / "done"
    run = Runner(out=lambda _: None, environ={"PATH": os.environ["PATH"]})
    script = f"for i in $(seq 1 20000); do echo step $i; done; touch {marker}"
    with pytest.raises(ConfigError, match=rf"^{log}: cannot write \(the disk is full\); free space there"):
        run.stream(["sh", "-c", script], log_path=log)
    assert marker.exists()
