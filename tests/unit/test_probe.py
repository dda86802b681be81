from pathlib import Path

import pytest

from moltbuild.system.host import default_storage_root, detect_place, mount_of, probe_storage

MOUNTINFO = """\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 22 0:40 / /work rw - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
31 30 0:41 / /work/cache rw - tmpfs tmpfs rw
32 22 0:42 / /mnt/with\\040space rw - xfs /dev/vdb rw
"""


def fake_root(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_plain_host_is_nothing_special(tmp_path):
    place = detect_place({}, fake_root(tmp_path, {"proc/1/cgroup": "0::/init.scope\n"}))
    assert (place.container, place.kubernetes, place.devpod, place.ci) == (False, False, False, None)
    assert place.label == "host (laptop or VM)"


@pytest.mark.parametrize(
    "files, evidence",
    [
        ({".dockerenv": ""}, "/.dockerenv exists"),
        ({"run/.containerenv": ""}, "/run/.containerenv exists"),
        ({"proc/1/cgroup": "0::/kubepods/besteffort/pod1\n"}, "/proc/1/cgroup mentions kubepods"),
    ],
)
def test_container_evidence(tmp_path, files, evidence):
    place = detect_place({}, fake_root(tmp_path, files))
    assert place.container and evidence in place.evidence


def test_kubernetes_devpod_and_ci(tmp_path):
    root = fake_root(tmp_path, {"var/run/secrets/kubernetes.io/serviceaccount/token": "t"})
    place = detect_place({"DEVPOD": "true", "GITHUB_ACTIONS": "true"}, root)
    assert place.kubernetes and place.container and place.devpod
    assert place.ci == "github-actions" and place.label == "CI (github-actions)"
    assert detect_place({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, tmp_path).label == "Kubernetes pod"
    assert detect_place({"CI": "false"}, tmp_path).ci is None
    assert detect_place({"CI": "true"}, tmp_path).ci == "ci"


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/var/lib/containers", ("/", "ext4")),
        ("/work/x/storage", ("/work", "overlay")),
        ("/work/cache/storage", ("/work/cache", "tmpfs")),
        ("/workspace", ("/", "ext4")),
        ("/mnt/with space/s", ("/mnt/with space", "xfs")),
    ],
)
def test_mount_of_picks_longest_prefix(path, expected):
    assert mount_of(Path(path), MOUNTINFO) == expected


def test_storage_by_fstype_when_not_root(tmp_path):
    root = fake_root(tmp_path, {"proc/self/mountinfo": MOUNTINFO})
    nested = probe_storage(Path("/work/storage"), root=root, euid=1000, fuse_path="")
    assert nested.nested and not nested.overlay_ok and nested.method == "fstype"
    assert nested.buildah_driver == "vfs" and "nested overlay" in nested.detail
    plain = probe_storage(Path("/work/cache/s"), root=root, euid=1000, fuse_path="")
    assert plain.overlay_ok and not plain.nested and plain.buildah_driver == "overlay"


def test_fuse_overlayfs_keeps_overlay_driver_on_nested(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fuse = bindir / "fuse-overlayfs"
    fuse.write_text("#!/bin/sh\n")
    fuse.chmod(0o755)
    root = fake_root(tmp_path, {"proc/self/mountinfo": MOUNTINFO})
    verdict = probe_storage(Path("/work/storage"), root=root, euid=1000, fuse_path=str(bindir))
    assert verdict.nested and verdict.buildah_driver == "overlay"
    assert verdict.driver_label == "overlay via fuse-overlayfs"


def test_default_storage_root():
    assert default_storage_root({}, euid=0) == Path("/var/lib/containers/storage")
    assert default_storage_root({"HOME": "/home/u"}, euid=1000) == Path(
        "/home/u/.local/share/containers/storage"
    )
    assert default_storage_root({"XDG_DATA_HOME": "/x"}, euid=1000) == Path("/x/containers/storage")
