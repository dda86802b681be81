"""Go binaries of the test cluster, built once per machine into a cache keyed by version.

Kubernetes' commands come from a small wrapper module that requires k8s.io/kubernetes and replaces
each staging module (`k8s.io/api`, ...) with its published `v0.<minor>.<patch>`; etcd is a
two-line main over `go.etcd.io/etcd/server/v3/etcdmain` in the same module, at the version
Kubernetes itself requires (so the build shares its dependency graph and build cache).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

KUBERNETES = "v1.35.4"
K8S_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet")
ETCD_MAIN = """package main

import (
\t"os"

\t"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
"""


def cache_root() -> Path:
    base = os.environ.get("MOLTBUILD_CLUSTER_CACHE") or Path.home() / ".cache" / "moltbuild" / "cluster"
    return Path(base)


def k8s_dir(version: str = KUBERNETES) -> Path:
    return cache_root() / f"kubernetes-{version}"


def go_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GOFLAGS", "-buildvcs=false")
    env["GOTOOLCHAIN"] = "local"  # never download a toolchain: the machine's Go builds these
    env.update(extra or {})
    return env


def go(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run `go ARGS` at the lowest CPU priority (the machine is shared); raise with stderr's tail."""
    res = subprocess.run(
        ["nice", "-n", "19", "go", *args], cwd=cwd, env=env or go_env(), capture_output=True, text=True
    )
    if res.returncode != 0:
        raise RuntimeError(f"go {' '.join(args)} failed ({res.returncode}):\n{res.stderr[-4000:]}")
    return res.stdout


def staging_replaces(kubernetes_gomod: str, version: str) -> dict[str, str]:
    """`k8s.io/X => ./staging/src/k8s.io/X` lines of kubernetes' go.mod -> {module: v0.<minor>.<patch>}."""
    published = "v0." + version.removeprefix("v").split(".", 1)[1]
    found = re.findall(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", kubernetes_gomod, re.M)
    return dict.fromkeys(found, published)


def download_gomod(module: str, version: str, workdir: Path) -> Path:
    out = go(["mod", "download", "-json", f"{module}@{version}"], workdir)
    return Path(json.loads(out)["GoMod"])


def write_wrapper(src: Path, version: str) -> None:
    """The wrapper module: requires kubernetes, replaces its staging modules, adds etcd's main."""
    src.mkdir(parents=True, exist_ok=True)
    gomod = download_gomod("k8s.io/kubernetes", version, src)
    replaces = staging_replaces(gomod.read_text(), version)
    lines = ["module moltbuild.test/cluster", "", "go 1.25.0", "", f"require k8s.io/kubernetes {version}", ""]
    lines += ["replace ("] + [f"\t{mod} => {mod} {ver}" for mod, ver in sorted(replaces.items())] + [")", ""]
    (src / "go.mod").write_text("\n".join(lines))
    (src / "etcd").mkdir(exist_ok=True)
    (src / "etcd" / "main.go").write_text(ETCD_MAIN)
    tools = "".join(f'\t_ "k8s.io/kubernetes/cmd/{name}"\n' for name in K8S_COMMANDS)
    (src / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\nimport (\n{tools})\n")
    go(["mod", "tidy"], src)


def version_ldflags(version: str) -> str:
    major, minor = version.removeprefix("v").split(".")[:2]
    pairs = {"gitVersion": version, "gitMajor": major, "gitMinor": minor, "gitTreeState": "clean"}
    flags = [
        f"-X k8s.io/{pkg}.{k}={v}"
        for pkg in ("component-base/version", "client-go/pkg/version")
        for k, v in pairs.items()
    ]
    return " ".join(["-s", "-w", *flags])


def build_kubernetes(version: str = KUBERNETES, log=print) -> Path:
    """etcd + the four Kubernetes commands in <cache>/kubernetes-<version>/bin (once per machine)."""
    final = k8s_dir(version)
    if (final / "bin" / "kubelet").exists():
        return final / "bin"
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".kubernetes-{version}-", dir=final.parent) as tmp:
        src, gobin = Path(tmp) / "src", Path(tmp) / "bin"
        started = time.monotonic()
        write_wrapper(src, version)
        log(f"cluster: wrapper module ready in {time.monotonic() - started:.0f} s; building (nice 19)")
        pkgs = ["./etcd", *(f"k8s.io/kubernetes/cmd/{name}" for name in K8S_COMMANDS)]
        go(["install", "-ldflags", version_ldflags(version), *pkgs], src, go_env({"GOBIN": str(gobin)}))
        took = time.monotonic() - started
        (Path(tmp) / "build.json").write_text(json.dumps({"version": version, "cold_build_s": round(took)}))
        log(f"cluster: built {', '.join(sorted(p.name for p in gobin.iterdir()))} in {took:.0f} s")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)  # atomic: a half-built cache never looks complete
        os.mkdir(tmp)  # so TemporaryDirectory's cleanup finds what it made
    return final / "bin"


if __name__ == "__main__":
    print(build_kubernetes())


KANIKO_MODULE = "github.com/osscontainertools/kaniko"
KANIKO = "v1.28.2"  # the version src/moltbuild/k8s/kaniko_defaults/job.yml pins


def build_kaniko(version: str = KANIKO, log=print) -> Path:
    """The executor from its Go module (static, like the official image); <cache>/kaniko-<version>/."""
    final = cache_root() / f"kaniko-{version}"
    if (final / "executor").exists():
        return final / "executor"
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".kaniko-{version}-", dir=final.parent) as tmp:
        started = time.monotonic()
        env = go_env({"GOBIN": tmp, "CGO_ENABLED": "0"})
        go(
            [
                "install",
                "-ldflags",
                f"-s -w -X {KANIKO_MODULE}/pkg/version.version={version}",
                f"{KANIKO_MODULE}/cmd/executor@{version}",
            ],
            Path(tmp),
            env,
        )
        log(f"cluster: built the kaniko executor {version} in {time.monotonic() - started:.0f} s")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        os.mkdir(tmp)
    return final / "executor"
