"""Every manifest under k8s/, every manifest moltbuild ships (k8s/kaniko_defaults) and every Job
`kaniko.build` renders validates against the Kubernetes schemas (kubernetes-validate, bundled; no
cluster needed). The packaged defaults and the repository's k8s/kaniko/ overrides: which wins."""

from __future__ import annotations

import shutil
from pathlib import Path

import kubernetes_validate
import pytest
from ruamel.yaml import YAML

from moltbuild.backends.kaniko_job import executor_args, job_manifest, job_name
from moltbuild.errors import ConfigError
from moltbuild.k8s import kaniko
from moltbuild.k8s.kaniko import (
    job_template,
    load_manifest,
    packaged,
    registry_secret,
    setup_objects,
)
from moltbuild.plan.planner import ImagePlan, cache_tag
from moltbuild.refs import ImageRef
from moltbuild.settings import Secret, load_settings

ROOT = Path(__file__).resolve().parents[2]
VERSION = kubernetes_validate.utils.latest_version()
MANIFESTS = sorted(p for p in (ROOT / "k8s").rglob("*.yml") if p.name != "kustomization.yml")


def validate(obj: dict) -> None:
    kubernetes_validate.validate(obj, VERSION, strict=True)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_manifest_validates(path):
    docs = [d for d in YAML(typ="safe").load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        validate(doc)


@pytest.mark.parametrize("name", kaniko.MANIFESTS)
def test_every_packaged_default_is_valid_kubernetes_objects(name):
    text = packaged(name).read_text(encoding="utf-8")
    docs = [d for d in YAML(typ="safe").load_all(text) if d]
    assert docs
    for doc in docs:
        validate(doc)


@pytest.mark.parametrize("name", kaniko.MANIFESTS)
def test_the_packaged_defaults_are_the_repositorys_k8s_kaniko_files(name):
    """The repository's k8s/kaniko/ overrides the defaults; while it means the same, they are one
    text. Change both, or change this test when the repository overrides on purpose."""
    assert packaged(name).read_text(encoding="utf-8") == (ROOT / "k8s" / "kaniko" / name).read_text()


def test_without_k8s_kaniko_the_packaged_defaults_are_used(tmp_path):
    objects = setup_objects(tmp_path, "builds")
    assert sorted((o["kind"], o["metadata"]["name"]) for o in objects) == [
        ("Role", "moltbuild-kaniko-runner"),
        ("RoleBinding", "moltbuild-kaniko-runner"),
        ("ServiceAccount", "moltbuild-builder"),
        ("ServiceAccount", "moltbuild-kaniko"),
    ]
    job = job_template(tmp_path)
    validate(job)
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "moltbuild-kaniko"
    assert load_manifest(tmp_path, "job.yml").source.endswith("kaniko_defaults/job.yml")


def test_a_file_in_k8s_kaniko_overrides_the_packaged_one_of_the_same_name(tmp_path):
    overrides = tmp_path / "k8s" / "kaniko"
    overrides.mkdir(parents=True)
    text = (ROOT / "k8s" / "kaniko" / "job.yml").read_text().replace("memory: 4Gi", "memory: 8Gi")
    (overrides / "job.yml").write_text(text)
    job = job_template(tmp_path)
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "8Gi"
    assert load_manifest(tmp_path, "job.yml").source == str(overrides / "job.yml")
    assert {o["kind"] for o in setup_objects(tmp_path, "n")} == {"ServiceAccount", "Role", "RoleBinding"}


@pytest.mark.parametrize(
    "name, text, fragment",
    [
        ("job.yml", "spec: [\n", r"job\.yml:\d+: invalid YAML"),
        ("job.yml", "# nothing but a comment\n", "holds no Kubernetes object"),
        ("rbac.yml", "- a\n- b\n", "document 1 is not a Kubernetes object"),
        ("job.yml", "kind: Pod\nmetadata: {name: p}\nspec: {}\n", "must be one Job"),
        ("job.yml", None, "must be one Job"),  # two executors
        ("job.yml", "kind: Job\nmetadata: {name: j}\nspec: {template: [a]}\n", "must be one Job"),
        ("serviceaccounts.yml", b"\xff\xfe", "not UTF-8"),
    ],
)
def test_an_override_that_is_there_but_invalid_is_a_one_line_error_naming_it(tmp_path, name, text, fragment):
    overrides = tmp_path / "k8s" / "kaniko"
    overrides.mkdir(parents=True)
    if text is None:
        job = (ROOT / "k8s" / "kaniko" / "job.yml").read_text()
        text = job.replace(
            "      containers:\n", "      containers:\n        - {name: second, image: busybox}\n"
        )
    (overrides / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError, match=fragment) as caught:
        setup_objects(tmp_path, "n") if name != "job.yml" else job_template(tmp_path)
    message = str(caught.value)
    assert "\n" not in message and str(overrides / name) in message
    if "YAML" not in fragment and "UTF-8" not in fragment:
        assert "delete it to use moltbuild's default" in message


@pytest.mark.parametrize("kind", ["dangling link", "directory"])
def test_an_override_that_cannot_be_read_is_an_error_not_the_default(tmp_path, kind):
    overrides = tmp_path / "k8s" / "kaniko"
    overrides.mkdir(parents=True)
    if kind == "directory":
        (overrides / "rbac.yml").mkdir()
    else:
        (overrides / "rbac.yml").symlink_to(tmp_path / "gone.yml")
    with pytest.raises(
        ConfigError, match=r"rbac\.yml(: links to .*gone\.yml, which does not| is a directory)"
    ):
        setup_objects(tmp_path, "n")


def test_a_project_that_overrides_one_file_gets_the_defaults_for_the_others(tmp_path):
    shutil.copytree(ROOT / "k8s" / "kaniko", tmp_path / "k8s" / "kaniko")
    (tmp_path / "k8s" / "kaniko" / "serviceaccounts.yml").unlink()
    sources = {name: load_manifest(tmp_path, name).source for name in kaniko.MANIFESTS}
    assert sources["serviceaccounts.yml"].endswith("kaniko_defaults/serviceaccounts.yml")
    assert sources["rbac.yml"] == str(tmp_path / "k8s" / "kaniko" / "rbac.yml")


def image(**kw) -> ImagePlan:
    digest = "sha256:" + "1" * 64
    base = dict(
        name="api",
        ref=ImageRef.parse("reg.example:5000/ns/moltbook-api", "t"),
        tags=("sha-abc1234", "main", cache_tag(digest)),
        context=ROOT / "api",
        dockerfile=ROOT / "api" / "Dockerfile",
        build_args={"VERSION": "sha-abc1234", "API_BASE_URL": "/api"},
        labels={"org.opencontainers.image.revision": "a" * 40},
        target=None,
        platforms=(),
        input_digest=digest,
        bases=("python:3.12-slim",),
    )
    return ImagePlan(**(base | kw))


def test_the_rendered_job_validates_and_carries_the_plan(tmp_path):
    settings = load_settings(ROOT, environ={"MOLTBUILD_KANIKO_TIMEOUT": "600"}, tool_config={})
    img = image(target="final", platforms=("linux/arm64",), cache=CACHE)
    args = executor_args(
        img, push=True, no_cache=False, mirror="m.example/hub", insecure=["reg.example:5000"]
    )
    name = job_name(img)
    job = job_manifest(ROOT, img, name=name, namespace="builds", settings=settings, args=args)
    validate(job)
    assert len(name) <= 63 and name.startswith("moltbuild-api-sha-abc1234-")
    assert job["metadata"]["namespace"] == "builds" and job["spec"]["activeDeadlineSeconds"] == 600
    (executor,) = job["spec"]["template"]["spec"]["containers"]
    assert (
        executor["image"].startswith("ghcr.io/osscontainertools/kaniko:") and "@sha256:" in executor["image"]
    )
    assert executor["command"] == ["/kaniko/executor"]
    assert [a for a in args if a.startswith("--destination=")] == [f"--destination={r}" for r in img.refs]
    for expected in (
        "--build-arg=API_BASE_URL=/api",
        "--target=final",
        "--custom-platform=linux/arm64",
        "--cache-repo=reg.example:5000/ns/moltbook-api/cache",
        "--registry-mirror=m.example/hub",
        "--insecure-registry=reg.example:5000",
        "--digest-file=/dev/termination-log",
        "--force",  # no service-account token: kaniko's container check can miss (#19)
    ):
        assert expected in args
    assert "--insecure-registry=m.example" not in args


CACHE = ImageRef("reg.example:5000", "ns/moltbook-api/cache")


@pytest.mark.parametrize(
    ("push", "no_cache", "cache", "expected"),
    [
        (True, False, CACHE, ["--cache=true", "--cache-repo=reg.example:5000/ns/moltbook-api/cache"]),
        (True, True, CACHE, ["--cache=false"]),  # --no-cache
        (True, False, None, ["--cache=false"]),  # MOLTBUILD_REGISTRY_CACHE=0: the plan has no cache
        # #19: without --push nothing is pushed, cache layers included, and no push right is checked
        (False, False, CACHE, ["--cache=false"]),
    ],
)
def test_kaniko_uses_the_registry_cache_only_when_pushing(push, no_cache, cache, expected):
    args = executor_args(image(cache=cache), push=push, no_cache=no_cache, mirror=None, insecure=[])
    assert [a for a in args if a.startswith("--cache")] == expected
    assert ("--no-push" in args) is not push


def test_no_push_no_cache_and_multi_platform():
    args = executor_args(image(), push=False, no_cache=True, mirror=None, insecure=[])
    assert "--no-push" in args and "--cache=false" in args and not any("--destination" in a for a in args)
    with pytest.raises(ConfigError, match="one platform per Job"):
        executor_args(
            image(platforms=("linux/amd64", "linux/arm64")),
            push=True,
            no_cache=False,
            mirror=None,
            insecure=[],
        )


def test_setup_objects_and_secret_validate_in_any_namespace():
    from moltbuild.registry.auth import Credentials

    objects = setup_objects(ROOT, "builds")
    assert {o["kind"] for o in objects} == {"ServiceAccount", "Role", "RoleBinding"}
    for obj in objects:
        validate(obj)
        assert obj["metadata"]["namespace"] == "builds"
    (binding,) = [o for o in objects if o["kind"] == "RoleBinding"]
    assert binding["subjects"][0]["namespace"] == "builds"
    secret = registry_secret("builds", {"ghcr.io": Credentials("octo", Secret("t0ken-value"), "x")})
    validate(secret)
    assert secret["type"] == "kubernetes.io/dockerconfigjson" and "t0ken-value" not in str(secret)


def test_timeout_setting_is_checked():
    settings = load_settings(ROOT, environ={"MOLTBUILD_KANIKO_TIMEOUT": "soon"}, tool_config={})
    with pytest.raises(ConfigError, match=r"KANIKO_TIMEOUT='soon' \(from environment\) must be a whole"):
        job_manifest(ROOT, image(), name="x", namespace="n", settings=settings, args=[])
