"""`moltbuild init` and the user's files as they are: line endings and links kept, a planned table
that does not load blamed on init, tasks.py read as Python, names it does not read (non-UTF-8) said,
a Containerfile read like a Dockerfile, a second kustomization pinning the same image noted."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from moltbuild.adopt.pyproject import with_table
from moltbuild.adopt.survey import Survey, survey_repository
from moltbuild.cli.main import main
from moltbuild.errors import ConfigError
from moltbuild.system.processes import Runner


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode())
    return path


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    write(root, "api/Dockerfile", "FROM node:20-alpine\n")
    write(root, "k8s/kustomization.yml", "resources: [api.yml]\nimages: [{name: ghcr.io/o/api}]\n")
    write(root, "k8s/api.yml", "kind: Deployment\nmetadata: {name: api}\n")
    return root


def init(capsys: pytest.CaptureFixture[str], root: Path) -> tuple[int, str, str]:
    code = main(["init", str(root)])
    out, err = capsys.readouterr()
    return code, out, err


def test_crlf_files_stay_crlf_and_only_the_added_lines_are_new(repo: Path, capsys) -> None:
    pyproject = '[project]\r\nname = "shop"\r\n'
    tasks = "# moltbuild? not here\r\nfrom invoke import task\r\n"
    write(repo, "pyproject.toml", pyproject)
    write(repo, ".gitignore", "dist/\r\nnode_modules/")
    write(repo, "tasks.py", tasks)

    assert init(capsys, repo)[0] == 0

    text = (repo / "pyproject.toml").read_bytes().decode()
    assert text.startswith(pyproject + "\r\n[tool.moltbuild]\r\n")
    assert "\n" not in text.replace("\r\n", "")  # every added line in the file's own ending
    assert (repo / ".gitignore").read_bytes() == b"dist/\r\nnode_modules/\r\nbuild/\r\n"
    assert (repo / "tasks.py").read_bytes() == tasks.encode()
    assert init(capsys, repo)[1].count("unchanged") >= 2  # a second run reads them back as they are


def test_a_linked_pyproject_is_written_through_the_link(repo: Path, capsys) -> None:
    target = write(repo, "config/pyproject.toml", '[project]\nname = "shop"\n')
    (repo / "pyproject.toml").symlink_to("config/pyproject.toml")

    assert init(capsys, repo)[0] == 0

    assert (repo / "pyproject.toml").is_symlink()
    assert os.readlink(repo / "pyproject.toml") == "config/pyproject.toml"
    assert "[tool.moltbuild.images.api]" in target.read_text()


def test_a_planned_table_that_does_not_load_is_inits_fault_not_the_files(repo: Path) -> None:
    survey: Survey = survey_repository(Runner(environ=os.environ, out=lambda _: None), repo)
    (repo / "api" / "Dockerfile").unlink()  # what init planned no longer loads
    path = repo / "pyproject.toml"

    with pytest.raises(ConfigError) as caught:
        with_table(path, '[project]\nname = "shop"\n', survey)

    said = caught.value.message
    assert said.startswith(f"{path}: the [tool.moltbuild] table init planned does not load beside this")
    assert "pyproject.toml itself is fine and unchanged: add the table by hand" in said
    assert "invalid" not in said


def test_a_tasks_py_naming_moltbuild_only_in_a_comment_does_not_load_it(repo: Path, capsys) -> None:
    write(repo, "tasks.py", '# we will use moltbuild one day\n"""moltbuild"""\nfrom invoke import task\n')
    out = init(capsys, repo)[1]
    assert "tasks.py exists without moltbuild's tasks; unchanged: add moltbuild.cli's collections" in out
    assert "loads moltbuild" not in out

    write(repo, "tasks.py", "from moltbuild.cli import build\n")
    assert "tasks.py exists and loads moltbuild; unchanged" in init(capsys, repo)[1]


def test_a_containerfile_is_read_like_a_dockerfile(repo: Path, capsys) -> None:
    write(repo, "worker/Containerfile", "FROM python:3.12\n")
    write(repo, "jobs/Containerfile.nightly", "FROM python:3.12\n")

    out = init(capsys, repo)[1]

    assert "Dockerfile: worker/Containerfile" in out.splitlines()
    table = (repo / "pyproject.toml").read_text()
    assert '[tool.moltbuild.images.worker]\nrepository = "worker"\ncontext = "worker/"\n' in table
    assert 'dockerfile = "Containerfile"' in table and 'dockerfile = "Containerfile.nightly"' in table


@pytest.mark.parametrize("in_git", [True, False])
def test_a_file_name_that_is_not_utf8_is_skipped_with_a_note(tmp_path: Path, capsys, in_git: bool) -> None:
    root = tmp_path / "shop"
    root.mkdir()
    if in_git:
        subprocess.run(["git", "init", "-q", str(root)], check=True)
    write(root, "api/Dockerfile", "FROM node:20-alpine\n")
    odd = os.fsdecode(b"caf\xe9")
    write(root, f"{odd}/Dockerfile", "FROM scratch\n")
    write(root, f"k8s/{odd}/kustomization.yml", "images: [{name: ghcr.io/o/x}]\n")

    code, out, err = init(capsys, root)

    assert (code, err) == (0, "")
    assert "note: caf\ufffd/Dockerfile: the file name is not UTF-8; skipped" in out.splitlines()
    assert "[tool.moltbuild.images.api]" in (root / "pyproject.toml").read_text()


def test_a_second_kustomization_pinning_the_same_image_is_noted(repo: Path, capsys) -> None:
    write(repo, "k8s/argo/kustomization.yaml", "images:\n  - name: ghcr.io/o/api\n    newTag: v1\n")

    out = init(capsys, repo)[1]

    assert (
        "note: k8s/kustomization.yml and k8s/argo/kustomization.yaml both pin ghcr.io/o/api: invoke "
        "k8s.set-images edits one per run (--kustomization picks it); keep the other in step"
    ) in out.splitlines()
