"""Configuration files of containerd, CNI and the kubelet (pure: text from parameters)."""

from __future__ import annotations

import json
from pathlib import Path

BRIDGE = "moltbuild0"
POD_CIDR = "10.244.0.0/24"
GATEWAY = "10.244.0.1"  # the node IP: kubelet, API server and registry listen here; pods reach it
SERVICE_CIDR = "10.96.0.0/24"


def containerd_toml(state: Path, *, sandbox_image: str, runtime: str = "runc") -> str:
    c = state / "containerd"
    cri = '[plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{c}/root"
state = "{c}/state"
[grpc]
  address = "{c}/containerd.sock"
[ttrpc]
  address = "{c}/containerd.sock.ttrpc"
[metrics]
  address = ""
{cri}]
  sandbox_image = "{sandbox_image}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  # This VM withholds CAP_SYS_RESOURCE even from root: runc's write of the sandbox's oom_score_adj
  # (-998) fails with "nsexec: failed to update /proc/self/oom_score_adj: Permission denied", seen
  # by the kubelet as "can't get final child's PID from pipe: EOF". Clamp to containerd's own score.
  restrict_oom_score_adj = true
  tolerate_missing_hugetlb_controller = true
  disable_hugetlb_controller = true
{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  BinaryName = "{runtime}"
  Root = "{c}/runc"
{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{state}/cni/net.d"
{cri}.registry]
  config_path = "{c}/certs.d"
"""


def hosts_toml(registry: str) -> str:
    """containerd's registry host config: plain HTTP to REGISTRY (host:port)."""
    return (
        f'server = "http://{registry}"\n\n[host."http://{registry}"]\n  capabilities = ["pull", "resolve"]\n'
    )


def cni_conflist(state: Path) -> str:
    bridge = {
        "type": "bridge",
        "bridge": BRIDGE,
        "isGateway": True,
        "ipMasq": False,  # pods talk to this machine only
        "hairpinMode": True,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY}]],
            "dataDir": str(state / "cni" / "ipam"),
        },
    }
    return json.dumps({"cniVersion": "0.4.0", "name": "moltbuild", "plugins": [bridge]}, indent=1)


def kubelet_config(state: Path, *, port: int, healthz_port: int) -> str:
    pki = state / "pki"
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": GATEWAY,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "tlsCertFile": str(pki / "kubelet.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet.key"),
        "cgroupDriver": "cgroupfs",  # PID 1 is no systemd here
        "failCgroupV1": False,  # this VM has cgroup v1 (hybrid); Kubernetes 1.35 refuses it by default
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{state}/containerd/containerd.sock",
        "podCIDR": POD_CIDR,
        "resolvConf": "/etc/resolv.conf",
        "serializeImagePulls": False,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "maxPods": 30,
        "staticPodPath": "",
        "makeIPTablesUtilChains": False,  # else KUBE-FIREWALL & co. stay in the host's iptables
        "podLogsDir": str(state / "pod-logs"),  # else /var/log/pods
        "fileCheckFrequency": "5s",
        "nodeStatusUpdateFrequency": "1s",  # Ready is reported within a second of starting
    }
    return json.dumps(config, indent=1)
