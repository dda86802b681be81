"""Debian packages the test cluster needs beside the Go binaries, installed by `nox -s cluster`
when missing (through the project's own `packages.setup`)."""

from __future__ import annotations

import os

from moltbuild.system.packages import setup
from moltbuild.system.processes import Runner

CLUSTER_PACKAGES = {
    "containerd": "the kubelet's container runtime (CRI v1; 1.6 on Debian 12)",
    "runc": "containerd's OCI runtime",
    "containernetworking-plugins": "CNI bridge, host-local and loopback for pods",
    "iproute2": "the pod bridge (ip link/addr)",
    "gcc": "compiles Kubernetes' pause.c (the pod sandbox image)",
    "libc6-dev": "static libc for pause",
    "buildah": "lays out the cluster's images (pause, helper, executor)",
    "skopeo": "copies them into the cluster's registry",
    "docker-registry": "the registry the host and the pods share",
    "busybox-static": "the Job helper image",
    "podman": "runs the executor image outside the cluster (level a)",
}


def ensure(log=print) -> list[str]:
    return setup(Runner(environ=os.environ, out=log), packages=list(CLUSTER_PACKAGES))
