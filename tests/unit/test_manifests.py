"""Every manifest under k8s/ and every Job `kaniko.build` renders validates against the
Kubernetes schemas (kubernetes-validate, bundled; no cluster needed)."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
from ruamel.yaml import YAML

from moltbuild.backends.kaniko_job import executor_args, job_manifest, job_name
from moltbuild.errors import ConfigError
from moltbuild.k8s.kaniko import registry_secret, setup_objects
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
    img = image(target="final", platforms=("linux/arm64",))
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
    ):
        assert expected in args
    assert "--insecure-registry=m.example" not in args


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
