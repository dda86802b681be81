import difflib
import json
import multiprocessing
import os
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from moltbuild import report
from moltbuild.errors import ConfigError
from moltbuild.files import load_yaml
from moltbuild.k8s import kustomize
from moltbuild.k8s.kustomize import Pin, edited, set_images, yaml_string
from moltbuild.system.locks import lock_outside_tree
from moltbuild.system.processes import Runner
from tests.unit.records import pushed_entry

ROOT = Path(__file__).resolve().parents[2]
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
API = "ghcr.io/ardenone/moltbook-api"
FE = "ghcr.io/ardenone/moltbook-frontend"


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    """The user's home (its cache holds the lock when the file is in no git checkout)."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("HOME", str(path))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return path


def runner(lines: list[str] | None = None) -> Runner:
    """A runner with the test's environment; what it says goes to `lines`."""
    return Runner(out=lines.append if lines is not None else lambda _: None, environ=dict(os.environ))


@pytest.fixture()
def kust(tmp_path) -> Path:
    """The repository's k8s/ copied: the kustomization with the manifests it lists."""
    for path in (ROOT / "k8s").glob("*.yml"):
        (tmp_path / path.name).write_text(path.read_text())
    return tmp_path / "kustomization.yml"


def runs(folder: Path, *images: str) -> str:
    """`resources: [workloads.yml]`, a file of Deployments running `images` (one each)."""
    docs = [
        f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: w{i}}}\n"
        f"spec: {{template: {{spec: {{containers: [{{name: c, image: '{image}'}}]}}}}}}\n"
        for i, image in enumerate(images)
    ]
    (folder / "workloads.yml").write_text("---\n".join(docs))
    return "resources: [workloads.yml]\n"


def load(path: Path) -> dict:
    return {e["name"]: e for e in YAML(typ="safe").load(path.read_text())["images"]}


def test_pins_tag_and_digest_and_keeps_comments_order_and_other_entries(kust):
    before = kust.read_text()
    text = before.replace("images:\n", "images:\n  - name: nginx  # keep me\n    newTag: '1.27'\n")
    kust.write_text(text)
    lines: list[str] = []
    changed = set_images(
        kust, [Pin(API, "127.0.0.1:5000/ns/moltbook-api", "sha-abc1234", D1)], runner=runner(lines)
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
    set_images(kust, [Pin(FE, "r.example/ns/fe", tag, None)], runner=runner())
    assert load(kust)[FE]["newTag"] == tag
    assert YAML(typ="base").load(kust.read_text())["images"][1]["newTag"] == tag
    assert isinstance(yaml_string(tag), str) and str(yaml_string(tag)) == tag


def test_adds_a_missing_entry_and_a_second_run_changes_nothing(kust, tmp_path):
    runs(tmp_path, "ghcr.io/ardenone/moltbook-worker:latest")
    kust.write_text(kust.read_text().replace("  - frontend.yml\n", "  - frontend.yml\n  - workloads.yml\n"))
    pin = Pin("ghcr.io/ardenone/moltbook-worker", "r.example/ns/worker", "sha-abc1234", D2)
    assert set_images(kust, [pin], runner=runner())
    first = kust.read_text()
    said: list[str] = []
    assert set_images(kust, [pin], runner=runner(said)) == []
    assert kust.read_text() == first and "nothing to change" in said[0]
    assert load(kust)[pin.name]["digest"] == D2


def test_an_image_no_container_runs_is_refused_not_pinned(kust):
    """`nginx` is not `docker.io/library/nginx` to kustomize: a pin for the one leaves the other."""
    before = kust.read_text()
    for name in ("ghcr.io/ardenone/moltbook-worker", "docker.io/ghcr.io/ardenone/moltbook-api"):
        with pytest.raises(ConfigError, match=rf"kustomization\.yml: no container runs {name} \(") as caught:
            set_images(kust, [Pin(name, "r.example/x", "t", None)], runner=runner())
        assert "\n" not in str(caught.value) and "moltbook-api" in str(caught.value)
    assert kust.read_text() == before


def test_no_digest_drops_a_stale_digest(kust):
    set_images(kust, [Pin(API, API, "sha-abc1234", D1)], runner=runner())
    set_images(kust, [Pin(API, API, "sha-def5678", None)], runner=runner())
    assert "digest" not in load(kust)[API] and load(kust)[API]["newTag"] == "sha-def5678"


def test_dry_run_prints_a_unified_diff_and_writes_nothing(kust):
    before = kust.read_text()
    out: list[str] = []
    set_images(kust, [Pin(API, API, "sha-abc1234", D1)], dry_run=True, runner=runner(out))
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
        set_images(kust, [Pin(API, API, "t", None)], runner=runner())
    assert kust.read_text() == text


def _pin_one(path: str, name: str, digest: str, home: str) -> None:
    for _ in range(20):
        pin = Pin(name, name, f"sha-{digest[7:14]}", digest)
        set_images(Path(path), [pin], runner=Runner(out=lambda _: None, environ={"HOME": home}))


def test_concurrent_runs_one_per_image_keep_both_updates(kust, home):
    procs = [
        multiprocessing.get_context("fork").Process(
            target=_pin_one, args=(str(kust), name, digest, os.environ["HOME"])
        )
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
    assert report.read(path)[0].outcome is report.Outcome.FAILED


# -- in place: every byte but the changed values stays; no file is left in the work tree ------------

DASHED = """---
# deployed from this file; edit by hand only to roll back
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - api.yml
# Pinned by `invoke k8s.set-images` (this comment stays)
images:   # one entry per image
  # the api
  - name: ghcr.io/ardenone/moltbook-api   # the name api.yml uses
    newName: ghcr.io/ardenone/moltbook-api
    newTag: 'latest'

  # the frontend, pinned by hand
  - name: ghcr.io/ardenone/moltbook-frontend
    newTag: "v1"
# the end
"""
PINNED = DASHED.replace("    newTag: 'latest'\n", f"    newTag: sha-abc1234\n    digest: {D1}\n").replace(
    "    newName: ghcr.io/ardenone/moltbook-api\n", "    newName: r.example/ns/moltbook-api\n"
)
PIN = Pin(API, "r.example/ns/moltbook-api", "sha-abc1234", D1)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture()
def repo(tmp_path) -> Path:
    """A git checkout holding k8s/kustomization.yml (DASHED), committed: clean."""
    root = tmp_path / "repo"
    (root / "k8s").mkdir(parents=True)
    (root / "k8s" / "kustomization.yml").write_text(DASHED)
    (root / "k8s" / "api.yml").write_text((ROOT / "k8s" / "api.yml").read_text())
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    return root


def everything(root: Path) -> list[Path]:
    return sorted(root.rglob("*"))


def test_in_a_checkout_only_the_kustomization_changes_and_the_lock_is_in_the_git_dir(repo, home):
    path = repo / "k8s" / "kustomization.yml"
    assert set_images(path, [PIN], runner=runner()) == [
        f"{API} -> r.example/ns/moltbook-api:sha-abc1234@{D1}"
    ]
    assert path.read_text() == PINNED  # the `---`, every comment, quoting and blank line kept
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == "M k8s/kustomization.yml"
    (lock,) = (repo / ".git" / "moltbuild").iterdir()
    assert lock.name.startswith("kustomization.yml-") and lock.suffix == ".lock"
    assert list(home.iterdir()) == []


def test_a_dry_run_creates_nothing_anywhere(repo, home):
    path = repo / "k8s" / "kustomization.yml"
    before = everything(repo)
    out: list[str] = []
    assert set_images(path, [PIN], runner=runner(out), dry_run=True)
    assert "+    newTag: sha-abc1234" in out[0].splitlines()
    assert path.read_text() == DASHED and everything(repo) == before  # no lock, temp file or folder
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    assert list(home.iterdir()) == []


def test_outside_a_checkout_the_lock_is_in_the_users_cache(tmp_path, home, monkeypatch):
    path = tmp_path / "plain" / "kustomization.yml"
    path.parent.mkdir()
    path.write_text(DASHED)
    (path.parent / "api.yml").write_text((ROOT / "k8s" / "api.yml").read_text())
    set_images(path, [PIN], runner=runner())
    assert path.read_text() == PINNED
    assert sorted(p.name for p in path.parent.iterdir()) == ["api.yml", "kustomization.yml"]
    (lock,) = (home / ".cache" / "moltbuild" / "locks").glob("*.lock")
    assert lock.name.startswith("kustomization.yml-")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    set_images(path, [Pin(API, API, "sha-def5678", None)], runner=runner())
    assert [p.name for p in (tmp_path / "xdg" / "moltbuild" / "locks").glob("*.lock")] == [lock.name]


A, B = "a.io/api", "b.io/fe"


@pytest.mark.parametrize(
    "before, pins, after",
    [
        pytest.param(  # CRLF stays CRLF, including the lines added
            f"---\r\nimages:\r\n- name: {A}\r\n  newTag: old\r\n",
            [Pin(A, A, "new", D1)],
            f"---\r\nimages:\r\n- name: {A}\r\n  newTag: new\r\n  newName: {A}\r\n  digest: {D1}\r\n",
            id="crlf",
        ),
        pytest.param(  # flow entries stay flow; a digest dropped with --no-digest goes with its comma
            f"images: [{{name: {A}, newName: {A}, newTag: x, digest: sha256:00}}]  # c\n",
            [Pin(A, A, "v2", None), Pin(B, B, "1", None)],
            f"images: [{{name: {A}, newName: {A}, newTag: v2}}, "
            f'{{name: {B}, newName: {B}, newTag: "1"}}]  # c\n',
            id="flow",
        ),
        pytest.param(  # a new entry takes the list's own indentation
            f"images:\n-   name: {A}\n    newTag: x\n",
            [Pin(B, B, "t", None)],
            f"images:\n-   name: {A}\n    newTag: x\n-   name: {B}\n    newName: {B}\n    newTag: t\n",
            id="indent",
        ),
        pytest.param(  # `images:` with nothing under it, a comment on it and a key after it
            "images:   # none yet\nnamePrefix: x-\n",
            [Pin(A, A, "t", None)],
            f"images:   # none yet\n  - name: {A}\n    newName: {A}\n    newTag: t\nnamePrefix: x-\n",
            id="empty",
        ),
        pytest.param(  # no `images` at all: added after the last key, before a closing comment
            "---\nresources:\n- a.yml\n# end",
            [Pin(A, A, "t", None)],
            f"---\nresources:\n- a.yml\nimages:\n  - name: {A}\n    newName: {A}\n    newTag: t\n# end",
            id="missing",
        ),
        pytest.param(  # a byte-order mark and CRLF stay where they are
            f"\ufeff---\r\n# kept\r\nimages:\r\n  - name: {A}\r\n    newTag: old\r\n",
            [Pin(A, A, "new", None)],
            f"\ufeff---\r\n# kept\r\nimages:\r\n  - name: {A}\r\n    newTag: new\r\n    newName: {A}\r\n",
            id="bom-crlf",
        ),
        pytest.param(  # the key on the dash line removed: the next one moves up
            f"images:\n  - digest: {D2}\n    name: {A}\n    newTag: t\n",
            [Pin(A, A, "t", None)],
            f"images:\n  - name: {A}\n    newTag: t\n    newName: {A}\n",
            id="dash-line",
        ),
    ],
)
def test_in_place_edits_of_every_shape(before, pins, after):
    assert edited(Path("k.yml"), before, pins)[0] == after


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("images:\n  - &api {name: a.example/api, newTag: x}\n", "anchor or alias"),
        ("images:\n  - name: a.example/api\n    newTag: |\n      x\n", "block scalar"),
    ],
)
def test_what_cannot_be_edited_in_place_is_refused_in_one_line(kust, text, fragment):
    text = runs(kust.parent, "a.example/api") + text
    kust.write_text(text)
    with pytest.raises(ConfigError, match=fragment) as caught:
        set_images(kust, [Pin("a.example/api", "a.example/api", "t", None)], runner=runner())
    assert "\n" not in str(caught.value) and str(kust) in str(caught.value)
    assert kust.read_text() == text


def test_an_edit_that_would_mean_something_else_is_never_written(kust, monkeypatch):
    before = kust.read_text()
    monkeypatch.setattr(kustomize, "rewrite", lambda text, *a: text.replace("moltbook-frontend", "other"))
    with pytest.raises(ConfigError, match="would change more than the pinned values"):
        set_images(kust, [Pin(API, API, "sha-abc1234", D1)], runner=runner())
    assert kust.read_text() == before


def test_without_git_the_lock_falls_back_to_the_users_cache(repo, home):
    path = repo / "k8s" / "kustomization.yml"
    no_git = Runner(out=lambda _: None, environ={"HOME": str(home), "PATH": str(home / "empty")})
    lock = lock_outside_tree(path, no_git)
    assert lock.parent == home / ".cache" / "moltbuild" / "locks" and not lock.parent.exists()
    assert lock_outside_tree(path, runner()).parent == (repo / ".git" / "moltbuild").resolve()
    assert lock.name == lock_outside_tree(path, runner()).name  # same file, same name wherever it is


def test_a_flow_entry_with_a_registry_port_is_pinned_as_kubectl_reads_it(kust):
    """`- {name: x, newName: 127.0.0.1:5000/x}` is valid YAML the C parser refuses: the positions of
    the images block are found with the pure parser instead of a one-line 'invalid YAML'."""
    text = kust.read_text().replace("images:\n", "images:\n  - {name: side, newName: 127.0.0.1:5000/side}\n")
    kust.write_text(text)
    changed = set_images(
        kust, [Pin(API, "127.0.0.1:5000/ns/moltbook-api", "sha-abc1234", D1)], runner=runner()
    )
    assert changed == [f"{API} -> 127.0.0.1:5000/ns/moltbook-api:sha-abc1234@{D1}"]
    after = kust.read_text()
    assert "  - {name: side, newName: 127.0.0.1:5000/side}\n" in after
    entries = {e["name"]: e for e in load_yaml(kust)["images"]}
    assert entries[API]["digest"] == D1 and entries["side"] == {
        "name": "side",
        "newName": "127.0.0.1:5000/side",
    }
