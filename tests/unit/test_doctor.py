import json

from moltbuild.backends.contract import BackendStatus
from moltbuild.flows import doctor
from moltbuild.flows.context import Session
from moltbuild.settings import load_settings
from moltbuild.system.host import Place
from moltbuild.system.processes import Runner
from tests.unit.verdicts import storage_verdict


def make_session(tmp_path, nested: bool, docker_works: bool, environ=None) -> Session:
    environ = environ or {}
    settings = load_settings(tmp_path, environ=environ, tool_config={"registry": "ghcr.io/ardenone"})
    session = Session(settings=settings, runner=Runner(dry_run=True, environ=environ), environ=environ)
    session.place = Place(container=True, kubernetes=True, devpod=True, ci=None, evidence=["DEVPOD is set"])
    session.storage = storage_verdict(
        nested=nested,
        path="/work/storage",
        mount_point="/work",
        method="mount",
        detail="EINVAL" if nested else "ok",
    )
    session.backends = {
        "docker": BackendStatus(
            "docker",
            True,
            docker_works,
            "daemon 28" if docker_works else "nested",
            "" if docker_works else "use buildah",
        ),
        "buildah": BackendStatus("buildah", True, True, "buildah 1.28"),
        "kaniko": BackendStatus("kaniko", False, False, "kubectl has no current context", "get a kubeconfig"),
    }
    return session


def test_json_names_each_backend_with_available_works_reason(tmp_path):
    report = json.loads(doctor.render(doctor.collect(make_session(tmp_path, True, False)), as_json=True))
    for name in ("docker", "buildah", "kaniko"):
        assert {"available", "works", "reason"} <= set(report["backends"][name])
    assert report["storage"]["nested"] is True and report["storage"]["buildah_driver"] == "vfs"
    assert report["auto"]["backend"] == "buildah"
    fixes = {p["fix"] for p in report["problems"]}
    assert any("buildah" in f for f in fixes) and "get a kubeconfig" in fixes


def test_table_reports_nested_overlay_and_fixes(tmp_path):
    text = doctor.render(doctor.collect(make_session(tmp_path, True, False)))
    assert "NESTED OVERLAY" in text and "auto picks: buildah" in text
    assert "fix: use buildah" in text and "place:    devpod" in text


def test_plain_disk_with_docker_has_no_storage_problem(tmp_path):
    report = doctor.collect(make_session(tmp_path, False, True))
    assert report["auto"]["backend"] == "docker"
    assert not any("nested" in p["problem"] for p in report["problems"])
    assert "NESTED" not in doctor.render(report)


def test_credentials_reported_present_but_never_shown(tmp_path):
    env = {"GITHUB_USERNAME": "octo", "GITHUB_TOKEN": "ghp_canary_doctor"}
    report = doctor.collect(make_session(tmp_path, False, True, environ=env))
    assert report["credentials"]["ghcr.io (GITHUB_TOKEN)"] is True
    out = doctor.render(report) + doctor.render(report, as_json=True)
    assert "ghp_canary_doctor" not in out
    assert not any("no registry credentials" in p["problem"] for p in report["problems"])
