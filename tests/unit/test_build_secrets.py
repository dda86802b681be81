"""Build secrets and cache mounts: the table, the Dockerfile's mounts, the plan's refusals and
notes, the input digest (ids only), the builders' flags (a file path, never the value) and the
kaniko refusal before any Job."""

import os
import stat
from pathlib import Path

import pytest

from moltbuild.backends.secrets import secret_files
from moltbuild.dockerfile import Dockerfile, parse
from moltbuild.errors import ConfigError
from moltbuild.plan.facts import GitState, ImageFacts, PlanFacts
from moltbuild.plan.planner import PlanInputs, make_plan
from moltbuild.plan.request import BuildRequest
from moltbuild.plan.shown import render_plan
from moltbuild.project import load_images
from moltbuild.settings import load_settings
from moltbuild.supply.provenance import BuildFacts, predicate
from moltbuild.system.processes import Runner
from tests.unit.test_backend_argv import backend, image

CANARY = "canary-6f1c2d9e-secret-value"
DOCKERFILE = """FROM scratch
RUN --mount=type=cache,target=/root/.npm --mount=type=secret,id=npmrc,required=true npm ci
RUN --mount=type=secret,target=/run/secrets/pip.conf \\
    --network=none pip install x
RUN --mount=type=secret,id=opt,required=false,env=OPT true
"""


def project(tmp_path: Path, secrets=None, dockerfile=DOCKERFILE, **extra) -> Path:
    (tmp_path / "app").mkdir(exist_ok=True)
    (tmp_path / "app" / "Dockerfile").write_text(dockerfile)
    table = {"repository": "app", "context": "app", **extra}
    if secrets is not None:
        table["secrets"] = secrets
    return tmp_path, {"images": {"app": table}}


def plan_of(tmp_path, secrets, dockerfile=DOCKERFILE, backend_name="buildah"):
    root, tool = project(tmp_path, secrets, dockerfile)
    git = GitState("a" * 40, "main", "main", False, "https://example.org/x/y", commit_time=1600000000)
    facts = tuple(
        ImageFacts(cfg, Dockerfile.read(cfg.dockerfile, cfg.build_args), git)
        for cfg in load_images(root, tool).values()
    )
    inputs = PlanInputs(load_settings(root, environ={}), PlanFacts(git, facts, tool), backend_name, "test")
    return make_plan(BuildRequest(smoke=False), inputs)


def test_the_dockerfile_names_each_secret_and_cache_mount_with_its_line():
    found = parse(DOCKERFILE, Path("Dockerfile"), {})
    assert [(m.type, m.id, m.line, m.optional) for m in found.mounts] == [
        ("cache", "/root/.npm", 2, False),
        ("secret", "npmrc", 2, False),
        ("secret", "pip.conf", 3, False),  # the id defaults to the target's file name
        ("secret", "opt", 5, True),
    ]
    with pytest.raises(ConfigError, match=r"Dockerfile:2: RUN --mount=type=secret names no id"):
        parse("FROM scratch\nRUN --mount=type=secret true\n", Path("Dockerfile"), {})


@pytest.mark.parametrize(
    "secrets, fragment",
    [
        ("env:X", "secrets must be a table"),
        ({"npmrc": CANARY}, 'say where the value comes from, "env:VARIABLE" or "file:PATH"'),
        ({"bad id": "env:X"}, "id 'bad id' may hold only"),
    ],
)
def test_a_bad_secrets_table_is_one_line_naming_the_key_and_never_the_value(tmp_path, secrets, fragment):
    root, tool = project(tmp_path, secrets)
    with pytest.raises(ConfigError) as caught:
        load_images(root, tool)
    message = str(caught.value)
    assert "[tool.moltbuild.images.app] secrets" in message and fragment in message
    assert CANARY not in message and "\n" not in message


@pytest.mark.parametrize("name", ["NPM_TOKEN", "db_password", "MY_SECRET_THING", "API_KEY"])
def test_a_build_arg_named_like_a_secret_with_a_value_is_refused_with_a_pointer_to_secrets(tmp_path, name):
    root, tool = project(tmp_path, build_args={name: CANARY})
    with pytest.raises(ConfigError) as caught:
        load_images(root, tool)
    message = str(caught.value)
    assert f"build_args {name!r} looks like a secret" in message and "secrets = {" in message
    assert CANARY not in message
    root, tool = project(tmp_path, build_args={name: "", "KEYBOARD": "x"})  # no value: fine
    assert load_images(root, tool)["app"].build_args[name] == ""


def test_a_mounted_secret_nobody_provides_is_refused_naming_the_line_and_the_key(tmp_path):
    with pytest.raises(ConfigError) as caught:
        plan_of(tmp_path, {"npmrc": "env:NPM_TOKEN"})
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'app' / 'Dockerfile'}:3: RUN --mount=type=secret,id=pip.conf")
    assert 'add secrets = {pip.conf = "env:VARIABLE"}' in message and "[tool.moltbuild.images.app]" in message


def test_the_plan_names_ids_and_sources_notes_unused_and_optional_and_hashes_ids_only(tmp_path, monkeypatch):
    monkeypatch.setenv("NPM_TOKEN", CANARY)
    secrets = {"npmrc": "env:NPM_TOKEN", "pip.conf": "file:pip.conf", "spare": "env:SPARE"}
    plan = plan_of(tmp_path, secrets)
    (img,) = plan.images
    assert img.secrets == (("npmrc", "env:NPM_TOKEN"), ("pip.conf", "file:pip.conf"))
    assert img.secret_mounts == ("npmrc", "pip.conf", "opt")
    shown = render_plan(plan)
    assert "app secrets: npmrc from env:NPM_TOKEN, pip.conf from file:pip.conf" in shown
    assert "secrets spare ([tool.moltbuild.images.app] secrets) are not mounted" in shown
    assert "mounts secret 'opt' (required=false) that nobody provides" in shown
    assert CANARY not in shown
    # the digest counts ids, not values nor where they come from; a cache mount's content is no input
    again = plan_of(tmp_path, {**secrets, "npmrc": "env:OTHER"}).images[0]
    assert again.input_digest == img.input_digest
    plain = "FROM scratch\nRUN true\n"
    without = plan_of(tmp_path, {}, plain).images[0]
    assert without.input_digest != img.input_digest and without.secrets == ()


def test_secret_files_are_private_hold_the_value_and_go_after_the_build(tmp_path):
    (tmp_path / "pip.conf").write_text("[global]\nindex-url = https://u:tok-123456789@x\n")
    runner = Runner(environ={"NPM_TOKEN": CANARY})
    given = (("npmrc", "env:NPM_TOKEN"), ("pip.conf", "file:pip.conf"))
    with secret_files(given, runner, tmp_path, tmp_path) as paths:
        folder = Path(paths["npmrc"]).parent
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE(os.stat(paths["npmrc"]).st_mode) == 0o600
        assert Path(paths["npmrc"]).read_text() == CANARY
        assert CANARY not in runner.mask(f"x {CANARY} y")
        assert "tok-123456789" not in runner.mask("index-url = https://u:tok-123456789@x")
    assert not folder.exists()
    missing = pytest.raises(ConfigError, match="secret npmrc: the environment variable NPM_TOKEN is not set")
    with missing, secret_files(given, Runner(environ={}), tmp_path, tmp_path):
        pass


def test_builders_get_the_file_never_the_value(tmp_path):
    img = image(secrets=(("npmrc", "env:NPM_TOKEN"),), secret_mounts=("npmrc",))
    paths = {"npmrc": str(tmp_path / "s" / "npmrc")}
    for name in ("buildah", "docker"):
        argv = backend(name, tmp_path).build_argv(img, secrets=paths)
        i = argv.index("--secret")
        assert argv[i + 1] == f"id=npmrc,src={tmp_path}/s/npmrc"
        assert argv[-1] == "/ctx"


def test_kaniko_refuses_a_secret_mount_before_any_job(tmp_path):
    kaniko = backend("kaniko", tmp_path)
    kaniko.check_images([image()])  # no mount: fine
    with pytest.raises(ConfigError) as caught:
        kaniko.check_images([image(secret_mounts=("npmrc",))])
    message = str(caught.value)
    assert "the kaniko executor cannot mount secrets" in message
    assert "--backend buildah or docker" in message and "base image" in message


def test_provenance_names_secret_ids_only():
    facts = BuildFacts(
        image="app", repository="r/app", digest="sha256:" + "1" * 64, tags=("t",), source="", commit="a",
        dirty=False, branch="main", build_args={}, dockerfile="app/Dockerfile", target=None, platforms=(),
        input_digest="sha256:" + "2" * 64, bases={}, backend="buildah", backend_detail="", started="s",
        finished="f", secrets=("npmrc",),
    )  # fmt: skip
    params = predicate(facts)["buildDefinition"]["externalParameters"]
    assert params["secrets"] == ["npmrc"]
