"""The pure parts of the test cluster (tests/support/cluster): the wrapper module's replace list,
version stamping, and the configuration files it writes. No process is started here."""

from __future__ import annotations

import json
import tomllib

from cryptography import x509

from tests.support.cluster import binaries, configs, pki

KUBERNETES_GOMOD = """module k8s.io/kubernetes

go 1.25.0

require (
\tk8s.io/api v0.0.0
\tgo.etcd.io/etcd/server/v3 v3.6.5 // indirect
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/cri-api => ./staging/src/k8s.io/cri-api
\tk8s.io/kube-openapi => k8s.io/kube-openapi v0.0.0-20250910
)
"""


def test_each_staging_module_is_replaced_by_its_published_v0_version():
    assert binaries.staging_replaces(KUBERNETES_GOMOD, "v1.35.4") == {
        "k8s.io/api": "v0.35.4",
        "k8s.io/cri-api": "v0.35.4",
    }


def test_the_binaries_report_the_kubernetes_version_they_were_built_from():
    flags = binaries.version_ldflags("v1.35.4")
    assert "-X k8s.io/component-base/version.gitVersion=v1.35.4" in flags
    assert "-X k8s.io/component-base/version.gitMinor=35" in flags


def test_the_kubelet_runs_on_cgroup_v1_with_cgroupfs_and_listens_on_the_node_ip(tmp_path):
    config = json.loads(configs.kubelet_config(tmp_path, port=10250, healthz_port=10248))
    assert config["failCgroupV1"] is False and config["cgroupDriver"] == "cgroupfs"
    assert config["address"] == configs.GATEWAY and config["readOnlyPort"] == 0
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["containerRuntimeEndpoint"] == f"unix://{tmp_path}/containerd/containerd.sock"


def test_containerd_keeps_everything_under_the_state_folder_and_clamps_oom_scores(tmp_path):
    text = configs.containerd_toml(tmp_path, sandbox_image="reg:1/pause@sha256:ab")
    config = tomllib.loads(text)
    assert config["root"].startswith(str(tmp_path)) and config["state"].startswith(str(tmp_path))
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["sandbox_image"] == "reg:1/pause@sha256:ab"
    assert cri["registry"]["config_path"] == f"{tmp_path}/containerd/certs.d"
    assert 'server = "http://10.244.0.1:5000"' in configs.hosts_toml("10.244.0.1:5000")


def test_pods_get_addresses_on_the_bridge_whose_gateway_is_the_node_ip(tmp_path):
    (bridge,) = json.loads(configs.cni_conflist(tmp_path))["plugins"]
    assert bridge["bridge"] == configs.BRIDGE and bridge["ipMasq"] is False
    (rng,) = bridge["ipam"]["ranges"][0]
    assert rng == {"subnet": configs.POD_CIDR, "gateway": configs.GATEWAY}
    assert bridge["ipam"]["dataDir"].startswith(str(tmp_path))


def test_the_certificates_name_the_identities_rbac_and_the_node_authorizer_expect(tmp_path):
    pki.make_all(tmp_path, node="vm", ips=["10.244.0.1", "127.0.0.1"])

    def subject(stem):
        cert = x509.load_pem_x509_certificate((tmp_path / f"{stem}.crt").read_bytes())
        return cert.subject.rfc4514_string()

    assert subject("kubelet-client") == "CN=system:node:vm,O=system:nodes"
    assert subject("admin") == "CN=moltbuild-admin,O=system:masters"
    assert subject("controller-manager") == "CN=system:kube-controller-manager"
    server = x509.load_pem_x509_certificate((tmp_path / "apiserver.crt").read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "10.244.0.1" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    assert all((tmp_path / key).stat().st_mode & 0o077 == 0 for key in ("sa.key", "ca.key", "admin.key"))
    kubeconfig = json.loads(
        pki.kubeconfig(tmp_path / "k", server="https://x:1", pki=tmp_path, stem="admin").read_text()
    )
    assert kubeconfig["users"][0]["user"]["client-certificate"] == str(tmp_path / "admin.crt")
