"""`moltbuild init` (moltbuild.cli.main -> moltbuild.adopt) in-process, on throwaway
repositories laid out like a real monorepo: a git repo with a node API and a frontend, a
kustomization whose resources are folders, Deployments running its images."""

from __future__ import annotations

import importlib.util
import subprocess
import tomllib
from pathlib import Path

import pytest

from moltbuild.adopt.changes import TASKS_PY
from moltbuild.cli.main import main
from moltbuild.project import load_images

ROOT = Path(__file__).resolve().parents[2]

KUSTOMIZATION = """\
---
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: shop
resources:
  - api/
  - frontend/
images:
  - name: ghcr.io/ardenone/moltbook-api
    newTag: latest
  - name: ghcr.io/ardenone/moltbook-frontend
    newTag: latest
"""

API_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: moltbook-api}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
        - name: api
          image: ghcr.io/ardenone/moltbook-api:latest
          ports: [{containerPort: 3000}]
---
apiVersion: v1
kind: Service
metadata: {name: moltbook-api}
spec: {ports: [{port: 80, targetPort: 3000}]}
"""

WEB_DEPLOYMENT = """\
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - {name: web, image: ghcr.io/ardenone/moltbook-frontend}
"""


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    write(root, "api/Dockerfile", 'FROM node:20-alpine\nWORKDIR /app\nCOPY . .\nCMD ["node", "server.js"]\n')
    write(root, "api/server.js", "require('http').createServer((q, s) => s.end('ok')).listen(3000);\n")
    write(root, "api/package.json", '{"name": "api", "version": "1.0.0"}\n')
    write(root, "api/node_modules/left-pad/Dockerfile", "FROM scratch\n")
    write(root, "moltbook-frontend/Dockerfile", "FROM nginx:1.27-alpine\nCOPY dist/ /usr/share/nginx/html/\n")
    write(root, "k8s/kustomization.yml", KUSTOMIZATION)
    write(root, "k8s/api/kustomization.yml", "resources:\n  - deployment.yml\n")
    write(root, "k8s/api/deployment.yml", API_DEPLOYMENT)
    write(root, "k8s/frontend/kustomization.yml", "resources:\n  - statefulset.yml\n")
    write(root, "k8s/frontend/statefulset.yml", WEB_DEPLOYMENT)
    return root


def init(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["init", *args])
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(root).parts
    }


def table(root: Path) -> dict:
    return tomllib.loads((root / "pyproject.toml").read_text())["tool"]["moltbuild"]


def test_init_writes_the_table_tasks_and_gitignore(repo: Path, capsys) -> None:
    code, out, err = init(capsys, str(repo))

    assert (code, err) == (0, "")
    tool = table(repo)
    assert tool["registry"] == "ghcr.io/ardenone"
    images = load_images(repo, tool)
    assert list(images) == ["api", "frontend"]
    assert images["api"].repository == "moltbook-api"
    assert images["api"].context == repo / "api"
    assert images["api"].dockerfile == repo / "api" / "Dockerfile"
    assert images["api"].manifest_name == "ghcr.io/ardenone/moltbook-api"
    assert images["frontend"].repository == "moltbook-frontend"
    assert images["frontend"].context == repo / "moltbook-frontend"
    # Nothing it could not see: no build args, platforms, target or smoke.
    assert [set(raw) for raw in tool["images"].values()] == [{"repository", "context", "dockerfile"}] * 2
    assert (repo / "tasks.py").read_text() == TASKS_PY
    assert (repo / ".gitignore").read_text() == "build/\n"

    lines = out.splitlines()
    api_deployment = "k8s/api/deployment.yml Deployment moltbook-api"
    for line in (
        "Dockerfile: api/Dockerfile",
        "Dockerfile: moltbook-frontend/Dockerfile",
        "kustomization: k8s/kustomization.yml (2 image(s))",
        f"image: ghcr.io/ardenone/moltbook-api, run by {api_deployment} (container api)",
        "image: ghcr.io/ardenone/moltbook-frontend, run by k8s/frontend/statefulset.yml StatefulSet web "
        "(container web)",
        "match: api = api/Dockerfile -> ghcr.io/ardenone/moltbook-api "
        f"(container api runs it: {api_deployment})",
        "match: frontend = moltbook-frontend/Dockerfile -> ghcr.io/ardenone/moltbook-frontend "
        "(moltbook-frontend is the image's name)",
        "wrote tasks.py: the invoke tasks (invoke --list)",
        "wrote .gitignore: added build/ (reports and logs)",
    ):
        assert line in lines
    assert "wrote pyproject.toml: created with [tool.moltbuild] (images api, frontend)" in lines
    assert "node_modules" not in out
    assert "undecided" not in out


def test_written_tasks_py_loads_the_installed_package_tasks(repo: Path, capsys) -> None:
    assert init(capsys, str(repo))[0] == 0
    spec = importlib.util.spec_from_file_location("adopted_tasks", repo / "tasks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert {"build", "push", "doctor"} <= set(module.ns.task_names)
    assert {"k8s", "kaniko", "env", "gh"} <= set(module.ns.collections)


def test_tasks_template_is_this_repositorys_tasks_py_without_its_sys_path_line() -> None:
    ours = (ROOT / "tasks.py").read_text()
    checkout_only = (
        "import sys\nfrom pathlib import Path\n\n"
        "# Let `invoke` work from a plain checkout whose dependencies are installed.\n"
        'sys.path.insert(0, str(Path(__file__).parent / "src"))\n\n'
    )
    assert checkout_only in ours
    assert ours.replace(checkout_only, "") == TASKS_PY
    assert "sys.path" not in TASKS_PY


def test_dry_run_shows_every_diff_and_writes_nothing(repo: Path, capsys) -> None:
    before = snapshot(repo)
    code, out, _ = init(capsys, "--dry-run", str(repo))

    assert code == 0
    assert snapshot(repo) == before
    assert "dry run: nothing written (3 file(s) would change)" in out
    for name in ("pyproject.toml", "tasks.py", ".gitignore"):
        assert f"--- /dev/null\n+++ b/{name}\n" in out
    assert "+build/\n" in out
    # The diff is exactly what a real run writes.
    shown = out.split("+++ b/pyproject.toml\n", 1)[1].split("--- ", 1)[0]
    added = "".join(line[1:] + "\n" for line in shown.splitlines() if line.startswith("+"))
    assert init(capsys, str(repo))[0] == 0
    assert (repo / "pyproject.toml").read_text() == added


def test_second_run_changes_nothing_and_says_so(repo: Path, capsys) -> None:
    assert init(capsys, str(repo))[0] == 0
    after_first = snapshot(repo)

    code, out, _ = init(capsys, str(repo))

    assert code == 0
    assert snapshot(repo) == after_first  # same bytes, not even rewritten
    assert "pyproject.toml: [tool.moltbuild] already declares every Dockerfile found; unchanged" in out
    assert "tasks.py exists and loads moltbuild; unchanged" in out
    assert ".gitignore already ignores build/; unchanged" in out
    assert "nothing to change" in out
    assert "wrote " not in out
    code, out, _ = init(capsys, "--dry-run", str(repo))
    assert code == 0 and "+++ " not in out and "nothing to change" in out


def test_unmatched_dockerfile_and_image_without_dockerfile_are_reported(repo: Path, capsys) -> None:
    write(repo, "worker/Dockerfile", 'FROM node:20-alpine\nCMD ["node", "worker.js"]\n')
    text = KUSTOMIZATION + "  - name: ghcr.io/ardenone/moltbook-db\n    newTag: '16'\n"
    write(repo, "k8s/kustomization.yml", text)

    code, out, _ = init(capsys, str(repo))

    assert code == 0
    lines = out.splitlines()
    assert (
        "undecided: worker/Dockerfile: no kustomization image fits it; image worker, "
        "repository worker taken from its folder: check it"
    ) in lines
    db = "ghcr.io/ardenone/moltbook-db (k8s/kustomization.yml)"
    assert f"undecided: {db}: no Dockerfile here fits it; left out" in lines
    images = load_images(repo, table(repo))
    assert images["worker"].repository == "worker"
    assert images["worker"].context == repo / "worker"
    assert sorted(images) == ["api", "frontend", "worker"]


def test_two_candidates_are_reported_and_neither_written(repo: Path, capsys) -> None:
    write(repo, "api/Dockerfile.dev", 'FROM node:20\nCMD ["npm", "run", "dev"]\n')

    code, out, _ = init(capsys, str(repo))

    assert code == 0
    assert (
        "undecided: ghcr.io/ardenone/moltbook-api: two candidates, api/Dockerfile, api/Dockerfile.dev; "
        "none written: add the right one by hand"
    ) in out.splitlines()
    assert list(table(repo)["images"]) == ["frontend"]


def test_existing_pyproject_is_kept_byte_for_byte(repo: Path, capsys) -> None:
    original = (
        '[project]\nname = "shop"   # the shop\nversion="1.0"\n\n'
        "[tool.black]\nline-length=100\n# a trailing comment, no newline after it"
    )
    write(repo, "pyproject.toml", original)

    code, out, _ = init(capsys, str(repo))

    assert code == 0
    text = (repo / "pyproject.toml").read_text()
    assert text.startswith(original + "\n\n[tool.moltbuild]\n")
    data = tomllib.loads(text)
    assert data["project"] == {"name": "shop", "version": "1.0"}
    assert data["tool"]["black"] == {"line-length": 100}
    assert sorted(load_images(repo, data["tool"]["moltbuild"])) == ["api", "frontend"]
    assert "wrote pyproject.toml: added [tool.moltbuild] (images api, frontend)" in out


def test_existing_table_is_reported_never_changed(repo: Path, capsys) -> None:
    original = '[tool.moltbuild]\nregistry = "ghcr.io/ardenone"\n\n[tool.moltbuild.images.api]\n'
    original += 'repository = "moltbook-api"\ncontext = "api/"\n'
    write(repo, "pyproject.toml", original)

    code, out, _ = init(capsys, str(repo))

    assert code == 0
    assert (repo / "pyproject.toml").read_text() == original
    assert "pyproject.toml already has [tool.moltbuild]; init changes nothing there. It would add:" in out
    assert "    [tool.moltbuild.images.frontend]\n" in out
    assert "[tool.moltbuild.images.api]" not in out


def test_ignored_and_vendored_dockerfiles_are_skipped_and_gitignore_appended(repo: Path, capsys) -> None:
    write(repo, ".gitignore", "dist/\nscratch/")
    write(repo, "scratch/Dockerfile", "FROM scratch\n")
    write(repo, "vendor/lib/Dockerfile", "FROM scratch\n")
    write(repo, "build/out/Dockerfile", "FROM scratch\n")

    code, out, _ = init(capsys, str(repo))

    assert code == 0
    assert "scratch/Dockerfile" not in out and "vendor/" not in out and "build/out" not in out
    assert (repo / ".gitignore").read_text() == "dist/\nscratch/\nbuild/\n"


def test_default_root_is_the_git_top_level(repo: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(repo / "k8s" / "api")
    code, out, _ = init(capsys)
    assert code == 0
    assert f"root: {repo.resolve()} (" in out
    assert sorted(load_images(repo, table(repo))) == ["api", "frontend"]


def test_outside_git_without_kustomization_repositories_come_from_folders(tmp_path: Path, capsys) -> None:
    write(tmp_path, "api/Dockerfile", "FROM node:20-alpine\n")
    write(tmp_path, "node_modules/x/Dockerfile", "FROM scratch\n")

    code, out, _ = init(capsys, str(tmp_path))

    assert code == 0
    assert "no git: every file" in out
    assert "kustomization: none under k8s/ (repositories come from the folders)" in out
    text = (tmp_path / "pyproject.toml").read_text()
    assert '# registry = "HOST/NAMESPACE"' in text  # none seen: none invented
    tool = tomllib.loads(text)["tool"]["moltbuild"]
    assert "registry" not in tool
    assert {name: cfg.repository for name, cfg in load_images(tmp_path, tool).items()} == {"api": "api"}


def test_bad_input_is_one_line_and_exit_2(repo: Path, tmp_path: Path, capsys) -> None:
    code, out, err = init(capsys, str(tmp_path / "nope"))
    assert code == 2 and out == ""
    assert err == f"error: {tmp_path / 'nope'} is not a directory; pass the repository's folder, or no PATH\n"

    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = init(capsys, str(empty))
    assert code == 2 and err.startswith(f"error: no Dockerfile under {empty} ")

    write(repo, "pyproject.toml", "[project\nname = 1\n")
    code, _, err = init(capsys, str(repo))
    assert code == 2 and err.startswith(f"error: {repo / 'pyproject.toml'}: invalid TOML (")
    assert len(err.splitlines()) == 1

    (repo / "pyproject.toml").unlink()
    write(repo, "k8s/api/deployment.yml", "kind: [Deployment\n")
    code, _, err = init(capsys, str(repo))
    assert (code, err) == (2, f"error: {repo / 'k8s/api/deployment.yml'}:2: invalid YAML; fix the syntax\n")
    assert not (repo / "pyproject.toml").exists()


def test_command_line(capsys) -> None:
    assert main(["--help"]) == 0
    assert "init" in capsys.readouterr().out
    assert main(["init", "--help"]) == 0
    assert "--dry-run" in capsys.readouterr().out
    assert main([]) == 2
    assert "name a command: init" in capsys.readouterr().err
    assert main(["init", "--nope"]) == 2
    assert "unrecognized arguments: --nope" in capsys.readouterr().err


def test_console_script_is_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"moltbuild": "moltbuild.cli.main:main"}


def test_odd_manifests_are_noted_never_a_crash(repo: Path, capsys) -> None:
    text = KUSTOMIZATION.replace("  - frontend/\n", "  - frontend/\n  - gone.yml\n  - odd.yml\n")
    write(repo, "k8s/kustomization.yml", text)
    write(repo, "k8s/odd.yml", "kind: Deployment\nmetadata: x\nspec: oops\n---\n- a list\n")
    write(repo, "k8s/frontend/kustomization.yml", "resources: statefulset.yml\n")

    code, out, _ = init(capsys, str(repo))

    assert code == 0
    lines = out.splitlines()
    assert (
        "note: k8s/kustomization.yml: resource 'gone.yml' does not exist (k8s/gone.yml); fix the path"
        in lines
    )
    assert (
        "note: k8s/frontend/kustomization.yml: resources must be a list of paths, e.g. [deployment.yml, api/]"
        in lines
    )
    assert sorted(load_images(repo, table(repo))) == ["api", "frontend"]

    write(repo, "k8s/kustomization.yml", "- not\n- a kustomization\n")
    (repo / "pyproject.toml").unlink()
    code, _, err = init(capsys, str(repo))
    assert code == 2
    assert (
        err == "error: k8s/kustomization.yml: not a kustomization (a mapping with resources: and images:)\n"
    )
