"""The workloads of k8s/ as Kubernetes renders them, in a repository laid out like a monorepo:
k8s/kustomization.yml (starting with `---` and comments) lists namespace.yml and the folders api/
and frontend/, each with its own kustomization. Read without a renderer (resources: followed),
and rendered by the real kustomize (`invoke setup` builds it) when it is installed (skipped
otherwise; under CI=true its absence fails)."""

from __future__ import annotations

import shutil
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from moltbuild.errors import ConfigError
from moltbuild.flows.context import Session
from moltbuild.flows.smoke import static_check
from moltbuild.k8s.manifests import load_manifests
from moltbuild.plan.planner import BuildPlan, ImagePlan
from moltbuild.plan.shown import render_plan
from moltbuild.plan.tags import GitState
from moltbuild.project import load_images
from moltbuild.refs import ImageRef
from moltbuild.settings import Secret, load_settings
from moltbuild.smoke.probes import HttpCheck, deployment_checks, smoke_plan_for, static_problems
from moltbuild.system.processes import Runner
from tests.conftest import need_tool

API = "ghcr.io/acme/api"
TABLE = "[tool.moltbuild.images.api.smoke]"

PYPROJECT = """\
[tool.moltbuild]
registry = "ghcr.io/acme"

[tool.moltbuild.images.api]
repository = "api"
context = "api/"

[tool.moltbuild.images.frontend]
repository = "frontend"
context = "frontend/"

[tool.moltbuild.images.worker]
repository = "worker"
context = "worker/"
"""

FILES = {
    "api/Dockerfile": "FROM python AS app\nEXPOSE 8000\nFROM app AS debug\nEXPOSE 5678\n",
    "frontend/Dockerfile": "FROM nginx\nEXPOSE 8080\n",
    "worker/Dockerfile": "FROM python\n",
    "k8s/kustomization.yml": """\
        ---
        # The whole shop: what `kubectl apply -k k8s` deploys.
        apiVersion: kustomize.config.k8s.io/v1beta1
        kind: Kustomization
        namespace: shop
        resources:
          - namespace.yml
          - api/        # its own kustomization
          - frontend/
        """,
    "k8s/namespace.yml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
    # not listed in any resources: never deployed, never read
    "k8s/old.yml": """\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: old-api}
        spec:
          selector: {matchLabels: {app: old}}
          template:
            metadata: {labels: {app: old}}
            spec:
              containers:
                - {name: api, image: ghcr.io/acme/api, readinessProbe: {httpGet: {path: /old, port: 1}}}
        """,
    "k8s/api/kustomization.yml": """\
        apiVersion: kustomize.config.k8s.io/v1beta1
        kind: Kustomization
        resources: [deployment.yml, service.yml, configmap.yml]
        """,
    "k8s/api/deployment.yml": """\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: api}
        spec:
          selector: {matchLabels: {app: api}}
          template:
            metadata: {labels: {app: api}}
            spec:
              containers:
                - name: api
                  image: ghcr.io/acme/api:1.0
                  ports: [{name: http, containerPort: 8000}]
                  envFrom:
                    - configMapRef: {name: api-settings}
                  env:
                    - {name: PORT, value: "8000"}
                    - {name: LOG_LEVEL, valueFrom: {configMapKeyRef: {name: api-settings, key: log_level}}}
                    - {name: DB_PASSWORD, valueFrom: {secretKeyRef: {name: api-db, key: password}}}
                    - {name: BASE_URL, value: "http://localhost:$(PORT)/api"}
                  readinessProbe:
                    httpGet: {path: /api/v1/health, port: http}
                    periodSeconds: 5
                    failureThreshold: 6
                  livenessProbe:
                    httpGet: {path: /api/v1/health, port: http}
                    initialDelaySeconds: 10
        """,
    "k8s/api/service.yml": """\
        apiVersion: v1
        kind: Service
        metadata: {name: api}
        spec: {selector: {app: api}, ports: [{port: 80, targetPort: http}]}
        """,
    "k8s/api/configmap.yml": """\
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: api-settings}
        data: {log_level: debug, FEATURE_SEARCH: "on"}
        """,
    "k8s/frontend/kustomization.yml": "resources: [deployment.yml]\n",
    "k8s/frontend/deployment.yml": """\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: frontend}
        spec:
          selector: {matchLabels: {app: frontend}}
          template:
            metadata: {labels: {app: frontend}}
            spec:
              containers:
                - name: web
                  image: ghcr.io/acme/frontend
                  readinessProbe: {httpGet: {path: /healthz, port: 8080}}
        """,
}

READINESS = HttpCheck("/api/v1/health", 8000, "k8s/api/deployment.yml Deployment api readinessProbe", 0, 5, 6)
LIVENESS = HttpCheck("/api/v1/health", 8000, "k8s/api/deployment.yml Deployment api livenessProbe", 10, 10, 3)
API_ENV = (
    ("log_level", "debug"),  # envFrom: every key of the ConfigMap
    ("FEATURE_SEARCH", "on"),
    ("PORT", "8000"),
    ("LOG_LEVEL", "debug"),  # configMapKeyRef
    ("BASE_URL", "http://localhost:8000/api"),  # $(PORT) expanded as Kubernetes does
)
DB_MISSING = f"DB_PASSWORD: secret api-db/password; give it in {TABLE} env"


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    write(root, {"pyproject.toml": PYPROJECT, **FILES})
    return root


def config(root: Path, name: str = "api"):
    return load_images(root)[name]


def bare_runner(tmp_path: Path, said: list[str] | None = None, *tools: str) -> Runner:
    """A runner whose PATH holds only `tools` (links to the real ones)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in tools:
        (bin_dir / tool).symlink_to(shutil.which(tool))
    out = said.append if said is not None else (lambda _: None)
    return Runner(out=out, environ={"PATH": str(bin_dir), "HOME": str(tmp_path)})


# === read without a renderer: resources: followed ================================================


def test_probes_of_workloads_in_subfolders_name_their_file(repo):
    assert deployment_checks(repo, API) == [READINESS, LIVENESS]  # not k8s/old.yml: not in resources
    assert [c.origin for c in deployment_checks(repo, "ghcr.io/acme/frontend")] == [
        "k8s/frontend/deployment.yml Deployment frontend readinessProbe"
    ]
    plan = smoke_plan_for(repo, config(repo))
    assert plan.http == (READINESS,)  # one GET per path and port
    assert plan.workloads == ("k8s/api/deployment.yml Deployment api",)
    assert (plan.probes, plan.found) == (2, "2 probes of 1 workload")


def test_the_workload_env_is_resolved_and_a_secret_is_left_out_with_a_note(repo):
    plan = smoke_plan_for(repo, config(repo))
    assert plan.env == API_ENV
    assert plan.env_missing == (DB_MISSING,)


def test_a_secret_is_given_when_the_smoke_table_sets_it_and_never_shown(repo):
    pyproject = repo / "pyproject.toml"
    pyproject.write_text(
        PYPROJECT.replace(
            'context = "api/"\n', 'context = "api/"\nsmoke = {env = {DB_PASSWORD = "pw-test-only"}}\n'
        )
    )
    plan = smoke_plan_for(repo, config(repo))
    assert plan.env == (
        *API_ENV[:4],
        ("DB_PASSWORD", Secret("pw-test-only")),
        API_ENV[4],
    )  # where k8s sets it
    assert isinstance(dict(plan.env)["DB_PASSWORD"], Secret) and plan.env_missing == ()
    assert "pw-test-only" not in repr(plan) and "pw-test-only" not in repr(config(repo))


def test_an_edited_manifest_in_a_subfolder_is_read_again(repo):
    assert deployment_checks(repo, API)[0].failure_threshold == 6
    deployment = repo / "k8s" / "api" / "deployment.yml"
    deployment.write_text(deployment.read_text().replace("failureThreshold: 6", "failureThreshold: 9"))
    assert deployment_checks(repo, API)[0].failure_threshold == 9


def test_static_problems_name_the_file_in_the_subfolder(repo):
    assert static_problems(repo, API, {8000}) == []
    assert static_problems(repo, API, {5678}) == [
        f"{check.origin}: GET /api/v1/health on port 8000, which the image does not EXPOSE (5678)"
        for check in (READINESS, LIVENESS)
    ]


def test_remote_resources_are_skipped_with_a_note(repo):
    top = repo / "k8s" / "kustomization.yml"
    remote = "https://github.com/acme/shared//monitoring?ref=v1"
    top.write_text(top.read_text() + f"  - {remote}\n")
    manifests = load_manifests(repo)  # no runner: no process, the files only
    assert manifests.how == "read from k8s/kustomization.yml and its resources (not rendered)"
    assert manifests.notes == (
        f"k8s/kustomization.yml: remote resource {remote} not read (only local files are)",
    )
    assert [w.label for w in manifests.workloads] == [
        "k8s/api/deployment.yml Deployment api",
        "k8s/frontend/deployment.yml Deployment frontend",
    ]
    assert all(w.namespace == "shop" for w in manifests.workloads)  # the top kustomization's namespace


@pytest.mark.parametrize(
    "rel, text, message",
    [
        (
            "k8s/frontend/kustomization.yml",
            "resources: [deployment.yml, gone.yml]\n",
            r"^k8s/frontend/kustomization\.yml: resource 'gone\.yml' does not exist "
            r"\(k8s/frontend/gone\.yml\); fix the path$",
        ),
        (
            "k8s/frontend/kustomization.yml",
            "resources: deployment.yml\n",
            r"^k8s/frontend/kustomization\.yml: resources must be a list of paths",
        ),
        (
            "k8s/frontend/kustomization.yml",
            "resources: [../]\n",
            r"^k8s/frontend/kustomization\.yml: \.\./ leads back to k8s/; remove the loop$",
        ),
        (
            "k8s/api/kustomization.yml",
            "resources: [deployment.yml]\n---\nresources: [service.yml]\n",
            r"^k8s/api/kustomization\.yml: 2 YAML documents; a kustomization is one$",
        ),
        (
            "k8s/api/configmap.yml",
            "data: [unclosed\n",
            r"/k8s/api/configmap\.yml:\d+: invalid YAML; fix the syntax$",
        ),
    ],
)
def test_a_broken_kustomization_names_the_file_and_the_fix(repo, rel, text, message):
    (repo / rel).write_text(text)
    with pytest.raises(ConfigError, match=message):
        deployment_checks(repo, API)


def test_a_listed_folder_without_a_kustomization_is_an_error(repo):
    (repo / "k8s" / "frontend" / "kustomization.yml").unlink()
    with pytest.raises(ConfigError, match=r"^k8s/frontend/ has no kustomization\.yml; add one, or list its"):
        deployment_checks(repo, API)


OLD_AS_LIST = """\
apiVersion: v1
kind: List
items:
  - apiVersion: apps/v1
    kind: Deployment
    metadata: {name: old-api}
    spec:
      template:
        spec:
          containers:
            - {name: api, image: ghcr.io/acme/api, readinessProbe: {httpGet: {path: /old, port: 1}}}
"""


def test_without_a_kustomization_every_manifest_below_k8s_is_read(repo):
    for kustomization in (repo / "k8s").rglob("kustomization.yml"):
        kustomization.unlink()
    (repo / "k8s" / "old.yml").write_text(OLD_AS_LIST)  # as `kubectl get -o yaml` writes it
    assert [c.origin for c in deployment_checks(repo, API)] == [
        READINESS.origin,
        LIVENESS.origin,
        "k8s/old.yml Deployment old-api readinessProbe",
    ]


JOBS = """\
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "@daily"
  jobTemplate:
    spec:
      template:
        spec:
          containers:
            - name: report
              image: ghcr.io/acme/worker@sha256:%s
              ports: [{name: metrics, containerPort: 9100}]
              startupProbe: {httpGet: {path: /ready, port: metrics}}
              env: [{name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: migrate}
spec:
  template:
    spec:
      containers:
        - name: migrate
          image: ghcr.io/acme/worker:2
          env:
            - {name: MODE, value: migrate}
            - {name: MEM, valueFrom: {resourceFieldRef: {resource: limits.memory}}}
            - {name: OPT, valueFrom: {configMapKeyRef: {name: absent, key: x, optional: true}}}
            - {name: REQ, valueFrom: {configMapKeyRef: {name: api-settings, key: nope}}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: queue}
spec:
  template:
    spec:
      containers:
        - {name: q, image: ghcr.io/acme/worker, livenessProbe: {httpGet: {path: /q, port: 9200}}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  template:
    spec:
      containers:
        - {name: a, image: ghcr.io/acme/worker, readinessProbe: {httpGet: {port: 9300}}}
""" % ("0" * 64)


def test_every_workload_kind_is_read_and_the_first_workload_gives_the_env(repo):
    write(repo, {"k8s/worker/jobs.yml": JOBS, "k8s/worker/kustomization.yml": "resources: [jobs.yml]\n"})
    top = repo / "k8s" / "kustomization.yml"
    top.write_text(top.read_text() + "  - worker/\n")
    plan = smoke_plan_for(repo, config(repo, "worker"))
    assert [(c.path, c.port, c.origin) for c in plan.http] == [
        ("/ready", 9100, "k8s/worker/jobs.yml CronJob nightly startupProbe"),
        ("/q", 9200, "k8s/worker/jobs.yml StatefulSet queue livenessProbe"),
        ("/", 9300, "k8s/worker/jobs.yml DaemonSet agent readinessProbe"),
    ]
    assert len(plan.workloads) == 4 and plan.found == "3 probes of 4 workloads"
    assert plan.env == ()  # the CronJob's: its only variable comes from the pod
    assert plan.env_missing == (
        "NODE: the pod field spec.nodeName (only a cluster sets it)",
        "MODE: k8s/worker/jobs.yml Job migrate sets it otherwise; the check uses "
        "k8s/worker/jobs.yml CronJob nightly's",
    )


def test_a_job_notes_pod_values_and_a_missing_configmap_key_but_not_an_optional_one(repo):
    write(
        repo,
        {
            "k8s/worker/jobs.yml": JOBS.split("---\n")[1],
            "k8s/worker/kustomization.yml": "resources: [jobs.yml]\n",
        },
    )
    top = repo / "k8s" / "kustomization.yml"
    top.write_text(top.read_text() + "  - worker/\n")
    plan = smoke_plan_for(repo, config(repo, "worker"))
    assert plan.env == (("MODE", "migrate"),)
    assert plan.env_missing == (
        "MEM: the container's limits.memory (only a cluster sets it)",
        "REQ: ConfigMap api-settings has no key 'nope'",
    )


def test_envfrom_a_secret_and_a_missing_configmap_are_noted(repo):
    deployment = repo / "k8s" / "api" / "deployment.yml"
    deployment.write_text(
        deployment.read_text().replace(
            "- configMapRef: {name: api-settings}",
            "- configMapRef: {name: api-settings}\n            - configMapRef: {name: gone}\n"
            "            - secretRef: {name: api-keys}",
        )
    )
    plan = smoke_plan_for(repo, config(repo))
    assert plan.env == API_ENV
    assert plan.env_missing == (
        "envFrom ConfigMap gone: not in the manifests",
        f"envFrom secret api-keys: its keys are not known here; the check gives only what {TABLE} env "
        "sets (nothing)",
        DB_MISSING,
    )


def test_name_prefixes_and_images_entries_are_followed(repo):
    write(
        repo,
        {
            "k8s/api/kustomization.yml": "namePrefix: shop-\nresources: [deployment.yml, configmap.yml]\n",
            "k8s/kustomization.yml": textwrap.dedent(FILES["k8s/kustomization.yml"])
            + "images:\n  - {name: ghcr.io/acme/frontend, newName: 'registry.local:5000/acme/frontend'}\n",
            "k8s/frontend/deployment.yml": FILES["k8s/frontend/deployment.yml"].replace(
                "image: ghcr.io/acme/frontend", "image: registry.local:5000/acme/frontend:9"
            ),
        },
    )
    plan = smoke_plan_for(repo, config(repo))
    assert plan.workloads == ("k8s/api/deployment.yml Deployment shop-api",)
    assert plan.env == API_ENV  # the ConfigMap as the file names it (kustomize renames both)
    assert deployment_checks(repo, "ghcr.io/acme/frontend")[0].path == "/healthz"  # by its newName


@pytest.mark.parametrize(
    "probe, message",
    [
        (
            "{httpGet: {port: http}, periodSeconds: soon}",
            r"readinessProbe: periodSeconds 'soon' must be a whole",
        ),
        (
            "{httpGet: {port: http}, failureThreshold: -1}",
            r"readinessProbe: failureThreshold -1 must be a whole",
        ),
        ("{httpGet: {port: web}}", r"readinessProbe uses port 'web', which the container does not name"),
    ],
)
def test_a_bad_probe_names_the_file_workload_and_probe(repo, probe, message):
    deployment = repo / "k8s" / "api" / "deployment.yml"
    text = deployment.read_text()
    start = text.index("readinessProbe:")
    deployment.write_text(
        text[:start] + f"readinessProbe: {probe}\n" + text[text.index("          livenessProbe:") :]
    )
    with pytest.raises(ConfigError, match=r"^k8s/api/deployment\.yml Deployment api " + message):
        deployment_checks(repo, API)


def test_a_bad_env_entry_names_the_file_and_the_fix(repo):
    deployment = repo / "k8s" / "api" / "deployment.yml"
    deployment.write_text(deployment.read_text().replace('value: "8000"', "value: 8000"))
    with pytest.raises(ConfigError) as info:
        smoke_plan_for(repo, config(repo))
    assert info.value.message == (
        "k8s/api/deployment.yml Deployment api container api: env PORT value 8000 is not a string; quote it"
    )


# === the static check and the plan say what they found ===========================================


def session(root: Path, runner: Runner) -> Session:
    settings = load_settings(root, environ={}, tool_config={"registry": "ghcr.io/acme"})
    return Session(settings=settings, runner=runner, environ={})


def test_static_check_says_per_image_what_it_checked(repo, tmp_path):
    said: list[str] = []
    assert static_check(session(repo, bare_runner(tmp_path, said))) == []
    assert said == [
        "manifests: read from k8s/kustomization.yml and its resources (no kustomize or kubectl on PATH)",
        "api: 2 probes of 1 workload (k8s/api/deployment.yml) checked",
        f"api: note: the smoke container does not get {DB_MISSING}",
        "frontend: 1 probe of 1 workload (k8s/frontend/deployment.yml) checked",
        "worker: note: no workload in k8s/ runs ghcr.io/acme/worker; no probe to check",
        "probes: every probe port is EXPOSEd by its image",
    ]


def test_static_check_checks_the_stage_the_image_is_built_from_and_names_the_file(repo, tmp_path):
    pyproject = repo / "pyproject.toml"
    pyproject.write_text(PYPROJECT.replace('context = "api/"\n', 'context = "api/"\ntarget = "debug"\n'))
    (repo / "api" / "Dockerfile").write_text(
        "FROM python AS debug\nEXPOSE 5678\nFROM debug AS app\nEXPOSE 8000\n"
    )
    with pytest.raises(ConfigError) as info:
        static_check(session(repo, bare_runner(tmp_path)), only="api")
    assert info.value.message.splitlines() == [
        f"{READINESS.origin}: GET /api/v1/health on port 8000, which the image does not EXPOSE (5678)",
        f"{LIVENESS.origin}: GET /api/v1/health on port 8000, which the image does not EXPOSE (5678)",
    ]


def test_the_plan_shows_the_workloads_and_probes_of_each_image(repo):
    plans = []
    for name in ("api", "worker"):
        smoke = smoke_plan_for(repo, config(repo, name))
        ref = ImageRef.parse(f"ghcr.io/acme/{name}", "t")
        digest = "sha256:" + "1" * 64
        plans.append(
            ImagePlan(
                name, ref, ("sha-1",), repo, repo / name / "Dockerfile", {}, {}, None, (), digest, (), smoke
            )
        )
    git = GitState("a" * 40, "main", "main", False, "https://example.org/r")
    plan = BuildPlan(tuple(plans), "docker", "test", False, ImageRef.parse("ghcr.io/acme", "t"), git, None)
    (line,) = [line for line in render_plan(plan).splitlines() if line.startswith("smoke:")]
    assert line == (
        "smoke:    each image runs before the push; api: HEALTHCHECK + /api/v1/health:8000 "
        "(2 probes of 1 workload); worker: HEALTHCHECK + no probe (0 probes of 0 workloads)"
    )


# === rendered by kustomize ======================================================================

PATCHED = """\
patches:
  - target: {kind: Deployment, name: api}
    patch: |-
      - op: replace
        path: /spec/template/spec/containers/0/readinessProbe/httpGet/path
        value: /api/v1/ready
images:
  - {name: ghcr.io/acme/api, newName: "registry.local:5000/acme/api", newTag: "1.2"}
"""
GENERATED = """\
configMapGenerator:
  - name: api-generated
    literals: [GENERATED=yes]
"""


def test_kustomize_renders_patches_generators_and_images_and_names_the_files(repo, tmp_path):
    need_tool("kustomize")  # `invoke setup` builds it from its Go module
    top = repo / "k8s" / "kustomization.yml"
    top.write_text(top.read_text() + PATCHED)
    api = repo / "k8s" / "api" / "kustomization.yml"
    api.write_text(api.read_text() + GENERATED)
    deployment = repo / "k8s" / "api" / "deployment.yml"
    deployment.write_text(
        deployment.read_text().replace(
            "- configMapRef: {name: api-settings}",
            "- configMapRef: {name: api-settings}\n            - configMapRef: {name: api-generated}",
        )
    )
    runner = bare_runner(tmp_path, None, "kustomize")
    manifests = load_manifests(repo, runner)
    assert manifests.how == "rendered by kustomize build k8s" and manifests.notes == ()
    ((workload, container),) = manifests.running(API)
    assert container["image"] == "registry.local:5000/acme/api:1.2"  # `images:` applied
    assert (workload.label, workload.namespace) == ("k8s/api/deployment.yml Deployment api", "shop")
    plan = smoke_plan_for(repo, config(repo), runner)
    assert [(c.path, c.origin) for c in plan.http] == [
        ("/api/v1/ready", READINESS.origin),  # the patch applied, the file still named
        ("/api/v1/health", LIVENESS.origin),
    ]
    assert dict(plan.env) == {**dict(API_ENV), "GENERATED": "yes"}  # the generated ConfigMap, renamed
    assert plan.env_missing == (DB_MISSING,)
    # read without a renderer, the same repository says what it could not apply
    walked = load_manifests(repo)
    assert walked.notes == (
        "k8s/api/kustomization.yml: configMapGenerator not applied",
        "k8s/kustomization.yml: patches not applied",
    )
    assert smoke_plan_for(repo, config(repo)).env_missing == (
        "envFrom ConfigMap api-generated: not in the manifests",
        DB_MISSING,
    )


def test_a_kustomization_kustomize_cannot_render_is_a_one_line_error(repo, tmp_path):
    need_tool("kustomize")
    top = repo / "k8s" / "kustomization.yml"
    top.write_text(top.read_text() + "patches:\n  - path: nowhere.yml\n")
    with pytest.raises(ConfigError) as info:
        load_manifests(repo, bare_runner(tmp_path, None, "kustomize"))
    message = info.value.message
    assert "\n" not in message and message.startswith(
        "k8s/kustomization.yml: kustomize build cannot render it ("
    )
    assert message.endswith("; fix the kustomization (`kustomize build k8s` shows the whole error)")
    assert "nowhere.yml" in message


def test_the_kaniko_plan_says_jobs_build_in_the_cluster_without_a_local_smoke_or_local_layers(repo):
    smoke = smoke_plan_for(repo, config(repo, "api"))
    ref = ImageRef.parse("ghcr.io/acme/api", "t")
    image = ImagePlan(
        "api", ref, ("sha-1",), repo, repo / "api" / "Dockerfile", {}, {}, None, (), "", (), smoke
    )
    image = replace(image, cache=ImageRef.parse("ghcr.io/acme/api/cache", "t"))
    git = GitState("a" * 40, "main", "main", False, "https://example.org/r")
    plan = BuildPlan((image,), "kaniko", "test", True, ImageRef.parse("ghcr.io/acme", "t"), git, None)
    lines = render_plan(plan).splitlines()
    smoke_line = next(line for line in lines if line.startswith("smoke:"))
    cache_line = next(line for line in lines if line.startswith("cache:"))
    assert "no local smoke" in smoke_line and "kaniko Jobs build and push in the cluster" in smoke_line
    assert "runs before the push" not in smoke_line
    assert "local layers" not in cache_line.replace("no local layers", "")
    assert "--cache-repo" in cache_line
