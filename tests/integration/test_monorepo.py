"""A repository laid out like the real monorepo, built here (small apps of our own): an api whose
routes live under /api/v1 and which refuses to start without the settings its Deployment gives
it, a frontend, Deployments in k8s/api/ and k8s/frontend/ reached through `resources:` of a
kustomization that starts with `---`. Adopted with `moltbuild init`, then built with buildah and
pushed to a real registry."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import build_env, clean_env, invoke, read_report, registry_digest

API_APP = """\
import http.server, os, sys
missing = [k for k in ("APP_MODE", "DATABASE_URL") if not os.environ.get(k)]
if missing:
    print("Missing required environment variables: " + ", ".join(missing), flush=True)
    sys.exit(3)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path in ("/api/v1/health", "/api/v1/ready")
        self.send_response(200 if ok else 404)
        self.end_headers()
        self.wfile.write(b"ok" if ok else b"not found")
http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""

API_DOCKERFILE = """\
FROM python:3.12-slim
ARG VERSION=dev
COPY app.py /app/app.py
EXPOSE 8080
HEALTHCHECK --interval=2s --timeout=2s --retries=5 \\
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/api/v1/health')"]
CMD ["python3", "/app/app.py"]
"""

WEB_APP = """\
import http.server
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()
http.server.ThreadingHTTPServer(("0.0.0.0", 3000), Handler).serve_forever()
"""

WEB_DOCKERFILE = """\
FROM python:3.12-slim
COPY server.py /srv/server.py
EXPOSE 3000
CMD ["python3", "/srv/server.py"]
"""

KUSTOMIZATION = """\
---
# moltbook, production
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: moltbook
resources:
  - namespace.yml
  - api/
  - frontend/
images:
  # pinned by CI: do not edit by hand
  - name: ghcr.io/ardenone/moltbook-api
    newTag: latest
  - name: ghcr.io/ardenone/moltbook-frontend
    newTag: latest
"""

API_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: moltbook-api
spec:
  selector: {matchLabels: {app: moltbook-api}}
  template:
    metadata: {labels: {app: moltbook-api}}
    spec:
      containers:
        - name: api
          image: ghcr.io/ardenone/moltbook-api:latest
          ports: [{name: http, containerPort: 8080}]
          env:
            - {name: APP_MODE, value: production}
            - {name: PORT, value: "8080"}
            - name: DATABASE_URL
              valueFrom: {configMapKeyRef: {name: api-config, key: database-url}}
          readinessProbe:
            httpGet: {path: READY_PATH, port: http}
          livenessProbe:
            httpGet: {path: /api/v1/health, port: http}
"""

WEB_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: moltbook-frontend
spec:
  selector: {matchLabels: {app: moltbook-frontend}}
  template:
    metadata: {labels: {app: moltbook-frontend}}
    spec:
      containers:
        - name: web
          image: ghcr.io/ardenone/moltbook-frontend:latest
          ports: [{containerPort: 3000}]
          readinessProbe:
            httpGet: {path: /healthz, port: WEB_PORT}
"""

FILES = {
    "api/app.py": API_APP,
    "api/Dockerfile": API_DOCKERFILE,
    "moltbook-frontend/server.py": WEB_APP,
    "moltbook-frontend/Dockerfile": WEB_DOCKERFILE,
    "k8s/kustomization.yml": KUSTOMIZATION,
    "k8s/namespace.yml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: moltbook}\n",
    "k8s/api/kustomization.yml": "resources:\n  - deployment.yml\n  - configmap.yml\n",
    "k8s/api/deployment.yml": API_DEPLOYMENT.replace("READY_PATH", "/health"),  # not served: wrong
    "k8s/api/configmap.yml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: api-config}\n"
        "data: {database-url: 'postgres://db/moltbook'}\n"
    ),
    "k8s/frontend/kustomization.yml": "resources: [deployment.yml]\n",
    "k8s/frontend/deployment.yml": WEB_DEPLOYMENT.replace("WEB_PORT", "3000"),
    "README.md": "# moltbook\n",
}


def git(repo: Path, *args: str) -> str:
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.org"]
    return subprocess.run(
        ["git", "-C", str(repo), *ident, *args], check=True, capture_output=True, text=True
    ).stdout


def commit(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)


def write(repo: Path, rel: str, text: str) -> None:
    path = repo / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture()
def monorepo(tmp_path: Path, build_tools) -> Path:
    repo = tmp_path / "moltbook"
    for rel, text in FILES.items():
        write(repo, rel, text)
    git(repo, "init", "-q", "-b", "main")
    commit(repo, "the monorepo")
    adopted = subprocess.run(
        [sys.executable, "-m", "moltbuild.cli.main", "init"], cwd=repo, capture_output=True, text=True
    )
    assert adopted.returncode == 0, adopted.stdout + adopted.stderr
    assert (repo / "tasks.py").is_file() and "[tool.moltbuild" in (repo / "pyproject.toml").read_text()
    commit(repo, "adopt moltbuild")
    return repo


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def test_the_monorepo_is_refused_for_a_wrong_probe_then_built_pushed_and_pinned(
    monorepo, mirror, storage_root
):
    env = build_env(mirror, storage_root, "mono")
    refused = invoke(monorepo, "build", "--push", "--backend", "buildah", env=env)
    text = output(refused)
    assert refused.returncode != 0, text[-3000:]
    assert "k8s/api/deployment.yml" in text and "/health" in text, text[-3000:]
    print("refusal:", next(line for line in text.splitlines() if line.startswith("error:")))
    tag = read_report(monorepo)["api"]["pin_tag"]
    assert registry_digest(mirror.url, "mono/moltbook-api", tag) is None  # nothing of it pushed

    write(monorepo, "k8s/api/deployment.yml", API_DEPLOYMENT.replace("READY_PATH", "/api/v1/ready"))
    commit(monorepo, "fix the readiness path")
    built = invoke(monorepo, "build", "--push", "--backend", "buildah", env=env)
    assert built.returncode == 0, output(built)[-3000:]
    report = read_report(monorepo)
    for name, repository in (("api", "mono/moltbook-api"), ("frontend", "mono/moltbook-frontend")):
        entry = report[name]
        assert registry_digest(mirror.url, repository, entry["pin_tag"]) == entry["digest"]
    assert report["api"]["smoke"].startswith("passed"), report["api"]["smoke"]
    # the frontend passed its check in the first run and was pushed then: reused now, not rebuilt
    assert report["frontend"]["outcome"] == "reused", report["frontend"]

    pinned = invoke(monorepo, "k8s.set-images", env=env)
    assert pinned.returncode == 0, output(pinned)
    assert git(monorepo, "status", "--porcelain").splitlines() == [" M k8s/kustomization.yml"]
    text = (monorepo / "k8s" / "kustomization.yml").read_text()
    assert text.startswith("---\n# moltbook, production\n") and "# pinned by CI: do not edit by hand" in text
    assert f"digest: {report['api']['digest']}" in text

    dry = invoke(monorepo, "kaniko.build", "--dry-run", env=env)
    assert dry.returncode == 0, output(dry)[-3000:]
    assert not (monorepo / "k8s" / "kaniko").exists()


def test_an_app_that_exits_at_start_is_named_with_what_it_did_not_get(monorepo, mirror, storage_root):
    """The workload's ConfigMap is gone: the container exits at once; the check stops at once and
    says why, with the variable the workload sets and the container did not get."""
    write(monorepo, "k8s/api/deployment.yml", API_DEPLOYMENT.replace("READY_PATH", "/api/v1/ready"))
    write(monorepo, "k8s/api/kustomization.yml", "resources:\n  - deployment.yml\n")
    (monorepo / "k8s" / "api" / "configmap.yml").unlink()
    commit(monorepo, "lose the ConfigMap")
    env = build_env(mirror, storage_root, "mono-exit")
    start = time.monotonic()
    failed = invoke(monorepo, "build", "--api-only", "--backend", "buildah", env=env)
    took = time.monotonic() - start
    text = output(failed)
    assert failed.returncode != 0, text[-3000:]
    assert "exited" in text and "code 3" in text, text[-3000:]
    assert "Missing required environment variables: DATABASE_URL" in text  # its own last words
    assert "DATABASE_URL" in read_report(monorepo)["api"]["error"]
    print("exit at start:", next(line for line in text.splitlines() if line.startswith("error:")))
    print(f"build with a container exiting at start: {took:.1f}s")  # the closing note quotes it


def test_smoke_static_catches_an_unexposed_probe_port_in_a_subfolder(monorepo):
    write(monorepo, "k8s/frontend/deployment.yml", WEB_DEPLOYMENT.replace("WEB_PORT", "3001"))
    out = invoke(monorepo, "smoke", "--static", env=clean_env())
    assert out.returncode != 0, output(out)
    assert "k8s/frontend/deployment.yml" in out.stderr and "3001" in out.stderr, output(out)
