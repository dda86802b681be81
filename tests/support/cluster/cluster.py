"""`nox -s cluster`: a single-node Kubernetes cluster on this machine from the cached Go binaries.

Everything lives under build/cluster/ (certificates, etcd data, containerd root, kubelet root,
registry storage, logs, pids.json); `down` stops what pids.json names, unmounts what is mounted
under it, deletes the bridge and removes the folder.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import warnings
from pathlib import Path

import requests

from tests.support.cluster import binaries, configs, images, pki, procs, seed
from tests.support.cluster import packages as cluster_packages

REPO = Path(__file__).resolve().parents[3]
STATE = REPO / "build" / "cluster"
GW = configs.GATEWAY
SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops")  # the kubelet sets them
REGISTRY_CONFIG = """version: 0.1
log: {{level: warn}}
storage: {{filesystem: {{rootdirectory: {root}}}, delete: {{enabled: true}}}}
http: {{addr: "{addr}"}}
"""


def node_name() -> str:
    return socket.gethostname().lower()


def bridge_up() -> None:
    """The CNI bridge, made before any pod so the node IP (its gateway address) exists at start."""
    if subprocess.run(["ip", "link", "show", configs.BRIDGE], capture_output=True).returncode != 0:
        images.run(["ip", "link", "add", configs.BRIDGE, "type", "bridge"])
    addrs = images.run(["ip", "-o", "addr", "show", "dev", configs.BRIDGE])
    if f" {GW}/" not in addrs:
        images.run(["ip", "addr", "add", f"{GW}/24", "dev", configs.BRIDGE])
    images.run(["ip", "link", "set", configs.BRIDGE, "up"])


def save_sysctls(state: Path) -> None:
    values = {k: Path("/proc/sys", k).read_text().strip() for k in SYSCTLS}
    (state / "sysctl.json").write_text(json.dumps(values))


def restore_sysctls(state: Path) -> None:
    path = state / "sysctl.json"
    if path.exists():
        for key, value in json.loads(path.read_text()).items():
            Path("/proc/sys", key).write_text(value)


class Ports(dict):
    """Free ports chosen at start, recorded in STATE/ports.json."""

    @classmethod
    def choose(cls, state: Path) -> Ports:
        ports = cls(
            {
                n: procs.free_port(GW if n in ("apiserver", "kubelet", "registry") else "127.0.0.1")
                for n in (
                    "registry",
                    "etcd",
                    "etcd_peer",
                    "apiserver",
                    "cm",
                    "scheduler",
                    "kubelet",
                    "kubelet_healthz",
                )
            }
        )
        (state / "ports.json").write_text(json.dumps(ports))
        return ports


def start_registry(state: Path, port: int) -> None:
    cfg = state / "registry.yml"
    cfg.write_text(REGISTRY_CONFIG.format(root=state / "registry", addr=f"{GW}:{port}"))
    procs.start(state, "registry", ["docker-registry", "serve", str(cfg)])


def start_etcd(state: Path, bins: Path, ports: Ports) -> None:
    client, peer = f"http://127.0.0.1:{ports['etcd']}", f"http://127.0.0.1:{ports['etcd_peer']}"
    procs.start(
        state,
        "etcd",
        [
            str(bins / "etcd"),
            "--name",
            "moltbuild",
            "--data-dir",
            str(state / "etcd"),
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"moltbuild={peer}",
            "--listen-metrics-urls",
            "",
            "--unsafe-no-fsync",
            "--log-level",
            "warn",
        ],
    )


def start_containerd(state: Path, registry: str, pause: str | None) -> None:
    """containerd with the registry as plain HTTP; the sandbox image pinned by digest when known."""
    c = state / "containerd"
    hosts = c / "certs.d" / registry
    hosts.mkdir(parents=True, exist_ok=True)
    (hosts / "hosts.toml").write_text(configs.hosts_toml(registry))
    sandbox = f"{registry}/{pause}" if pause else f"{registry}/moltbuild-cluster/pause:{images.PAUSE_TAG}"
    runtime = os.environ.get("MOLTBUILD_CLUSTER_RUNTIME", "runc")
    (c / "config.toml").write_text(configs.containerd_toml(state, sandbox_image=sandbox, runtime=runtime))
    (state / "cni" / "net.d").mkdir(parents=True, exist_ok=True)
    (state / "cni" / "net.d" / "10-moltbuild.conflist").write_text(configs.cni_conflist(state))
    procs.start(state, "containerd", ["containerd", "--config", str(c / "config.toml")])


def start_apiserver(state: Path, bins: Path, ports: Ports) -> None:
    p = state / "pki"
    procs.start(
        state,
        "kube-apiserver",
        [
            str(bins / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
            f"--bind-address={GW}",
            f"--advertise-address={GW}",
            f"--secure-port={ports['apiserver']}",
            f"--tls-cert-file={p}/apiserver.crt",
            f"--tls-private-key-file={p}/apiserver.key",
            f"--client-ca-file={p}/ca.crt",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",  # PodSecurity is on by default
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p}/sa.pub",
            f"--service-account-signing-key-file={p}/sa.key",
            f"--service-cluster-ip-range={configs.SERVICE_CIDR}",
            "--allow-privileged=true",
            f"--kubelet-client-certificate={p}/apiserver-kubelet-client.crt",
            f"--kubelet-client-key={p}/apiserver-kubelet-client.key",
            "--kubelet-preferred-address-types=InternalIP",
            "--profiling=false",
            "--v=1",
        ],
    )


def start_controllers(state: Path, bins: Path, ports: Ports) -> None:
    p = state / "pki"
    procs.start(
        state,
        "kube-controller-manager",
        [
            str(bins / "kube-controller-manager"),
            f"--kubeconfig={state}/controller-manager.kubeconfig",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['cm']}",
            "--leader-elect=false",
            f"--service-account-private-key-file={p}/sa.key",
            f"--root-ca-file={p}/ca.crt",
            "--use-service-account-credentials=true",
            "--kube-api-qps=200",  # the default 20 paces the start of each controller (4 s)
            "--kube-api-burst=400",
            f"--cluster-signing-cert-file={p}/ca.crt",
            f"--cluster-signing-key-file={p}/ca.key",
            "--v=1",
        ],
    )
    procs.start(
        state,
        "kube-scheduler",
        [
            str(bins / "kube-scheduler"),
            f"--kubeconfig={state}/scheduler.kubeconfig",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['scheduler']}",
            "--leader-elect=false",
            "--v=1",
        ],
    )


def start_kubelet(state: Path, bins: Path, ports: Ports) -> None:
    cfg = state / "kubelet.json"
    cfg.write_text(
        configs.kubelet_config(state, port=ports["kubelet"], healthz_port=ports["kubelet_healthz"])
    )
    save_sysctls(state)
    procs.start(
        state,
        "kubelet",
        [
            str(bins / "kubelet"),
            f"--config={cfg}",
            f"--kubeconfig={state}/kubelet.kubeconfig",
            f"--root-dir={state}/kubelet",
            f"--node-ip={GW}",
            f"--hostname-override={node_name()}",
            f"--cert-dir={state}/kubelet/pki",
            "--v=1",
        ],
    )


class Api:
    """Requests to the API server as the admin (client certificate)."""

    def __init__(self, state: Path, port: int):
        self.base = f"https://{GW}:{port}"
        self.session = requests.Session()
        self.session.trust_env = False  # REQUESTS_CA_BUNDLE would replace the cluster CA
        self.session.verify = str(state / "pki" / "ca.crt")
        self.session.cert = (str(state / "pki" / "admin.crt"), str(state / "pki" / "admin.key"))

    def get(self, path: str, **kw) -> requests.Response:
        return self.session.get(self.base + path, timeout=5, **kw)

    def ok(self, path: str) -> bool:
        return self.get(path).status_code == 200

    def node_ready(self, name: str) -> bool:
        res = self.get(f"/api/v1/nodes/{name}")
        conds = res.json().get("status", {}).get("conditions", []) if res.status_code == 200 else []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def healthz(port: int) -> bool:
    """A component's /healthz; its serving certificate is self-signed at its start (not verified)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return requests.get(f"https://127.0.0.1:{port}/healthz", verify=False, timeout=2).text == "ok"


def write_kubeconfigs(state: Path, port: int) -> None:
    server = f"https://{GW}:{port}"
    for stem in ("admin", "controller-manager", "scheduler"):
        pki.kubeconfig(state / f"{stem}.kubeconfig", server=server, pki=state / "pki", stem=stem)
    pki.kubeconfig(state / "kubelet.kubeconfig", server=server, pki=state / "pki", stem="kubelet-client")


def write_env(state: Path, refs: dict[str, str]) -> Path:
    registry = refs["pause"].split("/", 1)[0]
    lines = {
        "KUBECONFIG": str(state / "admin.kubeconfig"),
        "MOLTBUILD_KUBE_CONTEXT": "moltbuild",
        "MOLTBUILD_REGISTRY": f"{registry}/moltbook",
        "MOLTBUILD_INSECURE_REGISTRIES": registry,
        "MOLTBUILD_BASE_MIRROR": f"{registry}/mirror",
        "MOLTBUILD_KANIKO_HELPER_IMAGE": refs["helper"],
    }
    if "executor" in refs:
        lines["MOLTBUILD_KANIKO_IMAGE"] = refs["executor"]
    path = state / "env"
    path.write_text("".join(f"export {k}={v}\n" for k, v in lines.items()))
    return path


class Timer:
    def __init__(self, log):
        self.started, self.marks, self.log = time.monotonic(), {}, log

    def mark(self, what: str) -> None:
        self.marks[what] = round(time.monotonic() - self.started, 2)
        self.log(f"cluster: {what} at {self.marks[what]:.1f} s")


def prepare(state: Path, log) -> tuple[Path, dict]:
    """Binaries and images (cached by version), fresh certificates, the bridge."""
    cluster_packages.ensure(log=log)
    bins = binaries.build_kubernetes(log=log)
    found = seed.layouts(log=log)
    state.mkdir(parents=True, exist_ok=True)
    pki.make_all(state / "pki", node=node_name(), ips=[GW, "127.0.0.1", "10.96.0.1"])
    bridge_up()
    return bins, found


def start_storage(state: Path, bins: Path, found: dict, ports: Ports) -> dict[str, str]:
    """Registry (seeded from the cache when it can be), etcd and containerd; returns image refs."""
    registry = f"{GW}:{ports['registry']}"
    refs = seed.restore(found, state / "registry")
    start_registry(state, ports["registry"])
    start_etcd(state, bins, ports)
    start_containerd(state, registry, pause=(refs or {}).get("pause"))
    procs.wait_for(
        lambda: requests.get(f"http://{registry}/v2/", timeout=2).ok,
        what="registry",
        log=state / "logs" / "registry.log",
    )
    if refs is None:
        refs = seed.push_all(found, registry, state / "registry")
    return {name: f"{registry}/{ref}" for name, ref in refs.items()}


OWNER = Path("/run/moltbuild-cluster")  # the bridge and its address are machine-wide: one cluster


def claim(state: Path) -> None:
    """Refuse to start while another checkout's cluster runs (the bridge and node IP are shared)."""
    other = Path(OWNER.read_text()) if OWNER.exists() else state
    if other != state and procs.running(other):
        raise RuntimeError(
            f"a cluster from {other} runs on this machine; stop it first (nox -s cluster -- down there)"
        )
    OWNER.unlink(missing_ok=True)  # its cluster is gone


def owns_bridge(state: Path) -> bool:
    return not OWNER.exists() or Path(OWNER.read_text()) == state


def up(state: Path = STATE, log=print) -> Path:
    """Start everything (or nothing when it already runs); returns the env file. On failure the
    logs are kept in build/cluster-failed/ and everything started is stopped."""
    if (state / "env").exists() and set(procs.running(state)) >= set(COMPONENTS):
        log(f"cluster: already running; source {state / 'env'}")
        return state / "env"
    claim(state)
    down(state, log=lambda _msg: None)  # what a crashed or half-finished start left
    OWNER.write_text(str(state))
    try:
        return _up(state, log)
    except BaseException:
        failed = state.parent / "cluster-failed"
        shutil.rmtree(failed, ignore_errors=True)
        shutil.copytree(state / "logs", failed, dirs_exist_ok=True)
        log(f"cluster: start failed; logs kept in {failed}")
        down(state, log=log)
        raise


def _up(state: Path, log) -> Path:
    t = Timer(log)
    bins, found = prepare(state, log)
    t.mark("binaries, images, certificates ready")
    ports = Ports.choose(state)
    write_kubeconfigs(state, ports["apiserver"])
    logs = state / "logs"
    refs = start_storage(state, bins, found, ports)
    t.mark("registry up with its images")
    procs.wait_for(
        lambda: requests.get(f"http://127.0.0.1:{ports['etcd']}/health", timeout=2).ok,
        what="etcd",
        log=logs / "etcd.log",
    )
    start_apiserver(state, bins, ports)
    api = Api(state, ports["apiserver"])
    procs.wait_for(
        lambda: api.ok("/readyz"), what="kube-apiserver", timeout=120, log=logs / "kube-apiserver.log"
    )
    t.mark("API server ready")
    start_controllers(state, bins, ports)
    start_kubelet(state, bins, ports)
    wait_node(state, api, ports, logs)
    t.mark("node Ready, default ServiceAccount present")
    env = write_env(state, refs)
    (state / "timings.json").write_text(json.dumps(t.marks, indent=1))
    log(f"cluster: up in {time.monotonic() - t.started:.1f} s; source {env}")
    return env


COMPONENTS = (
    "registry",
    "etcd",
    "containerd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
)


def wait_node(state: Path, api: Api, ports: Ports, logs: Path) -> None:
    procs.wait_for(
        lambda: (
            subprocess.run(
                ["ctr", "--address", f"{state}/containerd/containerd.sock", "version"], capture_output=True
            ).returncode
            == 0
        ),
        what="containerd",
        log=logs / "containerd.log",
    )
    for name in ("cm", "scheduler"):
        comp = "kube-controller-manager" if name == "cm" else "kube-scheduler"
        procs.wait_for(lambda p=ports[name]: healthz(p), what=comp, log=logs / f"{comp}.log")
    procs.wait_for(lambda: healthz_http(ports["kubelet_healthz"]), what="kubelet", log=logs / "kubelet.log")
    procs.wait_for(
        lambda: api.node_ready(node_name()), what="node Ready", timeout=120, log=logs / "kubelet.log"
    )
    procs.wait_for(
        lambda: api.ok("/api/v1/namespaces/default/serviceaccounts/default"),
        what="default ServiceAccount",
        log=logs / "kube-controller-manager.log",
    )


def healthz_http(port: int) -> bool:
    return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).text == "ok"


def ctr(state: Path, *args: str, namespace: str = "k8s.io") -> str:
    res = subprocess.run(
        ["ctr", "--address", f"{state}/containerd/containerd.sock", "-n", namespace, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return res.stdout if res.returncode == 0 else ""


def tasks(state: Path, namespace: str = "k8s.io") -> dict[str, str]:
    """containerd's tasks in NAMESPACE: {id: status}."""
    rows = (line.split() for line in ctr(state, "tasks", "ls", namespace=namespace).splitlines()[1:])
    return {row[0]: row[2] for row in rows if len(row) >= 3}


def drain_pods(state: Path, log) -> None:
    """Force-delete every pod through the API and SIGKILL its containers; the kubelet then stops
    each sandbox the proper way (CNI DEL, network namespace removed)."""
    ports = json.loads((state / "ports.json").read_text())
    api = Api(state, ports["apiserver"])
    try:
        pods = api.get("/api/v1/pods").json().get("items", [])
    except (requests.RequestException, ValueError):
        return
    for pod in pods:
        meta = pod["metadata"]
        api.session.delete(
            f"{api.base}/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
            json={"gracePeriodSeconds": 0},
            timeout=5,
        )
    apps = ctr(state, "containers", "ls", "-q", 'labels."io.cri-containerd.kind"==container').split()
    for task, status in tasks(state).items():
        if task in apps and status == "RUNNING":  # a PID 1 that ignores SIGTERM would hold for 30 s
            ctr(state, "tasks", "kill", "-s", "SIGKILL", task)
    try:
        procs.wait_for(lambda: "RUNNING" not in tasks(state).values(), what="pods stopped", timeout=30)
    except TimeoutError:
        log("cluster: some pods still ran after 30 s; killing their tasks")


def kill_tasks(state: Path) -> None:
    """What the kubelet left: kill and delete each containerd task (so no shim stays behind)."""
    for ns in ctr(state, "namespaces", "ls", "-q").split():
        for task, status in tasks(state, ns).items():
            if status == "RUNNING":
                ctr(state, "tasks", "kill", "-s", "SIGKILL", task, namespace=ns)
                procs.wait_for(
                    lambda t=task, n=ns: tasks(state, n).get(t) != "RUNNING", what="task exit", timeout=10
                )
            ctr(state, "tasks", "delete", task, namespace=ns)


def remove_pod_logs(state: Path) -> None:
    """The kubelet links each container's log into /var/log/containers (a fixed path): remove the
    links into our podLogsDir (the logs themselves go with build/cluster)."""
    ours = str(state / "pod-logs") + "/"
    for link in Path("/var/log/containers").glob("*.log"):
        if link.is_symlink() and os.readlink(link).startswith(ours):
            link.unlink()


def sandbox_netns(state: Path) -> list[str]:
    """The network namespaces of containerd's pod sandboxes (bind mounts under /run/netns)."""
    found = []
    for sandbox in ctr(state, "containers", "ls", "-q", 'labels."io.cri-containerd.kind"==sandbox').split():
        try:
            spec = json.loads(ctr(state, "containers", "info", sandbox))["Spec"]
        except (ValueError, KeyError):
            continue
        found += [
            ns["path"] for ns in spec["linux"]["namespaces"] if ns["type"] == "network" and ns.get("path")
        ]
    return found


def remove_netns(paths: list[str]) -> None:
    """What a sandbox stopped without the kubelet (kill_tasks) leaves: its netns mount."""
    for path in paths:
        if Path(path).exists():
            subprocess.run(["umount", path], capture_output=True)
            Path(path).unlink(missing_ok=True)


def unmount_all(state: Path) -> list[str]:
    """Unmount every mount point under STATE, deepest first; returns the ones that stayed."""
    prefix = str(state.resolve()) + "/"
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    ours = sorted({p for p in points if p.startswith(prefix)}, key=len, reverse=True)
    for point in ours:
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)
    left = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in left if p.startswith(prefix)]


def down(state: Path = STATE, log=print) -> None:
    """Stop everything `up` started, leave no process, mount, bridge or state behind."""
    started = time.monotonic()
    running = procs.running(state)
    if "kube-apiserver" in running and "kubelet" in running:
        procs.stop_all_named(state, ["kube-controller-manager", "kube-scheduler"])
        drain_pods(state, log)
    procs.stop_all_named(state, ["kubelet"])
    remove_pod_logs(state)
    netns = []
    if "containerd" in procs.running(state):
        netns = sandbox_netns(state)
        kill_tasks(state)
    order = ["kube-controller-manager", "kube-scheduler", "containerd", "kube-apiserver", "etcd", "registry"]
    left = procs.stop_all(state, order=order, log=log)
    remove_netns(netns)
    stuck = unmount_all(state) if state.exists() else []
    if owns_bridge(state):
        subprocess.run(["ip", "link", "del", configs.BRIDGE], capture_output=True)
    restore_sysctls(state)
    if left or stuck:
        raise RuntimeError(f"cluster: still running {left}, still mounted {stuck}; state kept in {state}")
    shutil.rmtree(state, ignore_errors=True)
    if owns_bridge(state):
        OWNER.unlink(missing_ok=True)
    log(f"cluster: down in {time.monotonic() - started:.1f} s")


def main(argv: list[str]) -> int:
    if argv[:1] == ["down"]:
        down()
    elif argv[:1] in ([], ["up"]):
        up()
    elif argv[:1] == ["status"]:
        print(json.dumps(procs.running(STATE)))
    else:
        print("usage: python -m tests.support.cluster [up|down|status]")
        return 2
    return 0
