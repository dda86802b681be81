"""The deployment model (k8s/deployment): the kustomization tree as kustomize builds it, and what
`k8s.set-images` and `verify --kustomization` do with it. Each expected image here is what
kustomize v5.7.1 renders for the same tree (tests/integration/test_deployment_kustomize.py runs the
real binary over these trees)."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from moltbuild.errors import ConfigError
from moltbuild.flows.verify import deployed_targets
from moltbuild.k8s import deployment
from moltbuild.k8s.images import ImageEntry, image_matches, split
from moltbuild.k8s.kustomize import Pin, set_images
from moltbuild.system.processes import Runner

D1 = "sha256:" + "1" * 64

DEPLOY = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  template:
    spec:
      initContainers: [{name: init, image: nginx}]
      containers:
        - {name: api, image: "api:dev"}
        - {name: web, image: "docker.io/library/nginx:1.0"}
"""
AS_LIST = "apiVersion: v1\nkind: List\nitems:\n" + "".join(
    ("- " if i == 0 else "  ") + line + "\n" for i, line in enumerate(DEPLOY.splitlines())
)

# name -> {file: text}: trees whose rendering kustomize fixes (see the integration test)
TREES = {
    "base-renames": {
        "base/kustomization.yml": "resources: [deploy.yml]\nimages:\n"
        "- {name: api, newName: registry.example/team/api, newTag: base}\n",
        "base/deploy.yml": DEPLOY,
        "kustomization.yml": "resources: [base]\nimages:\n- {name: api, newTag: top}\n",
    },
    "base-tags": {
        "base/kustomization.yml": "resources: [deploy.yml]\nimages:\n- {name: api, newTag: base}\n",
        "base/deploy.yml": DEPLOY,
        "kustomization.yml": "resources: [base]\nimages:\n- {name: api, newTag: top}\n",
    },
    "duplicates": {
        "deploy.yml": DEPLOY,
        "kustomization.yml": "resources: [deploy.yml]\nimages:\n"
        "- {name: nginx, newTag: '1'}\n- {name: nginx, newTag: '2'}\n"
        "- {name: api, newName: r.example/api}\n- {name: api, newTag: never}\n",
    },
    "list-and-component": {
        "deploy.yml": AS_LIST,
        "comp/kustomization.yml": "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n"
        "images:\n- {name: nginx, newTag: comp}\n",
        "kustomization.yml": "resources: [deploy.yml]\ncomponents: [comp]\nimages:\n"
        "- {name: docker.io/library/nginx, digest: '" + D1 + "'}\n- {name: nginx, tagSuffix: -x}\n",
    },
}
TREES["cronjob-suffix"] = {  # a CronJob's pod is outside kustomize's field specs: a suffix once
    "cron.yml": "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: nightly}\n"
    "spec:\n  schedule: '@daily'\n"
    "  jobTemplate: {spec: {template: {spec: {containers: [{name: api, image: 'api:1'}]}}}}\n",
    "kustomization.yml": "resources: [cron.yml]\nimages:\n- {name: api, tagSuffix: -x}\n",
}
RENDERED = {
    "cronjob-suffix": [("api", "api:1-x")],  # (container, image) as `kustomize build` renders each tree
    "base-renames": [
        ("init", "nginx"),
        ("api", "registry.example/team/api:base"),
        ("web", "docker.io/library/nginx:1.0"),
    ],
    "base-tags": [("init", "nginx"), ("api", "api:top"), ("web", "docker.io/library/nginx:1.0")],
    "duplicates": [("init", "nginx:2"), ("api", "r.example/api:dev"), ("web", "docker.io/library/nginx:1.0")],
    "list-and-component": [
        ("init", "nginx:comp-x-x"),
        ("api", "api:dev"),
        ("web", f"docker.io/library/nginx@{D1}"),
    ],
}


def tree(root: Path, name: str) -> Path:
    for rel, text in TREES[name].items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root / "kustomization.yml"


def rendered(model: deployment.Deployment) -> list[tuple[str, str]]:
    return sorted(
        ((c.name, c.image) for c in model.containers), key=lambda c: ["init", "api", "web"].index(c[0])
    )


def runner() -> Runner:
    return Runner(out=lambda _: None, environ=dict(os.environ))


@pytest.mark.parametrize("name", sorted(TREES))
def test_the_model_renders_each_container_as_kustomize_does(tmp_path, name):
    assert rendered(deployment.load(tree(tmp_path, name))) == RENDERED[name]


def test_each_container_knows_the_entry_that_produced_its_image(tmp_path):
    top = tree(tmp_path, "base-renames")
    by_name = {c.name: c for c in deployment.load(top).containers}
    entry = by_name["api"].entry
    assert (entry.file, entry.index) == (tmp_path / "base" / "kustomization.yml", 0)
    assert by_name["init"].entry is None and by_name["web"].entry is None  # matched by no entry
    assert by_name["api"].before(top) == "registry.example/team/api:base"  # what the top level sees


@pytest.mark.parametrize(
    "image, name, matched",
    [
        ("nginx", "nginx", True),
        ("nginx:1.27@" + D1, "nginx", True),
        ("docker.io/library/nginx", "nginx", False),  # no normalising: kustomize's rule
        ("nginx", "docker.io/library/nginx", False),
        ("nginx-extra", "nginx", False),
        ("localhost:5000/api:1", "localhost:5000/api", True),
    ],
)
def test_an_entry_name_matches_an_image_name_exactly(image, name, matched):
    assert image_matches(image, name) is matched


@pytest.mark.parametrize(
    "image, parts",
    [
        ("localhost:5000/api", ("localhost:5000/api", "", "")),
        ("localhost:5000/api:1@" + D1, ("localhost:5000/api", "1", D1)),
        ("api@" + D1, ("api", "", D1)),
    ],
)
def test_split_reads_a_port_as_part_of_the_name(image, parts):
    assert split(image) == parts


def test_a_new_tag_drops_the_old_digest_and_a_digest_drops_the_old_tag():
    assert ImageEntry(Path("k"), 0, "a", new_tag="2").apply(f"a:1@{D1}") == "a:2"
    assert ImageEntry(Path("k"), 0, "a", digest=D1).apply("a:1") == f"a@{D1}"
    assert ImageEntry(Path("k"), 0, "a", new_name="b", new_tag="2", digest=D1).apply("a") == f"b:2@{D1}"


def test_a_folder_without_a_kustomization_is_an_error_and_remote_resources_a_note(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "kustomization.yml").write_text("resources: [plain]\n")
    with pytest.raises(ConfigError, match=r"plain/ has no kustomization\.yml; add one, or list its files"):
        deployment.load(tmp_path, root=tmp_path)
    (tmp_path / "kustomization.yml").write_text("resources: ['https://github.com/o/r//k8s?ref=v1']\n")
    model = deployment.load(tmp_path, root=tmp_path)
    assert model.remote and model.containers == ()


def test_a_lenient_load_notes_a_missing_resource_and_still_reads_the_rest(tmp_path):
    tree(tmp_path, "duplicates")
    top = tmp_path / "kustomization.yml"
    top.write_text("resources: [gone.yml, deploy.yml]\nimages:\n- {newTag: x}\n- {name: api, newTag: t}\n")
    message = "kustomization.yml: resource 'gone.yml' does not exist (gone.yml); fix the path"
    with pytest.raises(ConfigError) as caught:
        deployment.load(top, root=tmp_path)
    assert str(caught.value) == message
    model = deployment.load(top, root=tmp_path, lenient=True)
    assert model.notes == (
        message,
        "kustomization.yml: images[0] needs a `name` (the image name the manifests use)",
    )
    assert [(e.index, e.name) for e in model.entries] == [(1, "api")]
    assert dict(rendered(model))["api"] == "api:t"


def test_only_k8s_reads_yaml_so_only_it_reads_a_kustomization():
    """One deployment model: outside moltbuild/k8s/ nothing imports files.load_yaml (a YAML reader
    elsewhere would be a second reading of the kustomization tree)."""
    src = Path(__file__).resolve().parents[2] / "src" / "moltbuild"
    # any non-kustomization YAML reader, with why: init reads compose files' `build:` sections
    allowed: set[str] = {"adopt/compose.py"}
    users = set()
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if _imports_load_yaml(node):
                users.add(path.relative_to(src).as_posix())
    assert users and all(u.startswith("k8s/") or u in allowed for u in users), sorted(users)


def _imports_load_yaml(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom) and node.module == "moltbuild.files":
        return any(a.name == "load_yaml" for a in node.names)
    return isinstance(node, ast.Attribute) and node.attr == "load_yaml"  # files.load_yaml(...)


# -- k8s.set-images and verify --kustomization agree with what kustomize renders ------------------


def test_a_base_that_renames_the_image_makes_the_top_level_pin_a_one_line_refusal(tmp_path):
    top = tree(tmp_path, "base-renames")
    before = top.read_text()
    with pytest.raises(ConfigError) as caught:
        set_images(top, [Pin("api", "r.example/api", "sha-1", D1)], runner=runner())
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'base' / 'kustomization.yml'}: images[0] renames api:dev to ")
    assert "\n" not in message and top.read_text() == before
    # pinning the name the top level sees works, and kustomize renders the pin
    set_images(top, [Pin("registry.example/team/api", "r.example/api", "sha-1", D1)], runner=runner())
    assert dict(rendered(deployment.load(top)))["api"] == f"r.example/api:sha-1@{D1}"


def test_verify_checks_the_image_kustomize_renders_not_the_top_level_entry(tmp_path):
    top = tree(tmp_path, "base-renames")
    targets = {t.ref.name: t for t in deployed_targets(top, set(), tmp_path)}
    assert str(targets["registry.example/team/api"].ref) == "registry.example/team/api:base"
    assert targets["registry.example/team/api"].origin == "base/kustomization.yml images[0]"
    assert "docker.io/library/api" not in targets  # the top-level `api` entry applies to nothing


def test_a_pin_for_docker_io_library_nginx_leaves_an_nginx_entry_alone(tmp_path):
    top = tree(tmp_path, "duplicates")
    text = top.read_text()
    set_images(top, [Pin("docker.io/library/nginx", "r.example/nginx", "t", None)], runner=runner())
    assert top.read_text().startswith(text)  # a new entry for that name; the `nginx` ones untouched
    assert dict(rendered(deployment.load(top)))["init"] == "nginx:2"
    assert dict(rendered(deployment.load(top)))["web"] == "r.example/nginx:t"


def test_a_duplicated_entry_is_pinned_where_kustomize_applies_it(tmp_path):
    top = tree(tmp_path, "duplicates")
    set_images(top, [Pin("nginx", "r.example/nginx", "t", D1)], runner=runner())
    text = top.read_text()
    assert "- {name: nginx, newTag: '1'}" in text  # the first stays; the last one applied is pinned
    assert dict(rendered(deployment.load(top)))["init"] == f"r.example/nginx:t@{D1}"
    # `api` renamed by the first entry: the second never applies, so the first is pinned
    set_images(top, [Pin("api", "r.example/api", "t", D1)], runner=runner())
    assert "- {name: api, newTag: never}" in top.read_text()
    assert dict(rendered(deployment.load(top)))["api"] == f"r.example/api:t@{D1}"


def test_a_later_entry_that_would_override_the_pin_gets_a_new_entry_after_it(tmp_path):
    top = tree(tmp_path, "duplicates")
    top.write_text(top.read_text() + "- {name: r.example/nginx, newTag: stale}\n")
    set_images(top, [Pin("nginx", "r.example/nginx", "t", D1)], runner=runner())
    assert top.read_text().endswith(
        f'- {{name: nginx, newName: r.example/nginx, newTag: t, digest: "{D1}"}}\n'
    )
    assert dict(rendered(deployment.load(top)))["init"] == f"r.example/nginx:t@{D1}"


def test_an_entry_that_rewrites_the_image_wherever_the_pin_goes_is_refused_naming_it(tmp_path):
    top = tree(tmp_path, "duplicates")
    top.write_text(
        "resources: [deploy.yml]\nimages:\n- {name: ngin., newName: other}\n"
    )  # kustomize: a regex
    with pytest.raises(
        ConfigError, match=r"kustomization\.yml: images\[0\] \(name: ngin\.\) rewrites nginx too"
    ):
        set_images(top, [Pin("nginx", "r.example/nginx", "t", D1)], runner=runner())


def test_a_container_no_entry_matches_is_not_pinned_in_verify(tmp_path):
    top = tree(tmp_path, "duplicates")
    by_ref = {str(t.ref): t for t in deployed_targets(top, {"docker.io/library/nginx"}, tmp_path)}
    assert "not pinned" not in by_ref["docker.io/library/nginx:2"].unpinned  # an entry produced it
    assert by_ref["docker.io/library/nginx:1.0"].unpinned.startswith("no images: entry in kustomization.yml")


def test_components_and_lists_are_pinned_through_the_top_level(tmp_path):
    top = tree(tmp_path, "list-and-component")
    set_images(top, [Pin("nginx", "r.example/nginx", "t", None)], runner=runner())
    assert dict(rendered(deployment.load(top)))["init"] == "r.example/nginx:t"
