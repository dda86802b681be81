"""The cluster's certificates and keys (ECDSA P-256): one CA, the API server's serving cert, a client
cert per component, the service-account signing key, and kubeconfigs that use them."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# file stem -> (common name, organization): the identities RBAC and the Node authorizer know
CLIENTS = {
    "admin": ("moltbuild-admin", "system:masters"),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", "system:masters"),
    "controller-manager": ("system:kube-controller-manager", None),
    "scheduler": ("system:kube-scheduler", None),
}


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _write(path: Path, key, cert: x509.Certificate) -> None:
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.with_suffix(".key").chmod(0o600)
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _builder(subject: x509.Name, issuer: x509.Name, key) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
    )


def make_ca(pki: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key, name = _key(), _name("moltbuild-cluster-ca")
    cert = (
        _builder(name, name, key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    _write(pki / "ca", key, cert)
    return key, cert


def issue(pki: Path, stem: str, ca, *, cn: str, org: str | None = None, sans=(), server=False) -> None:
    ca_key, ca_cert = ca
    key = _key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = _builder(_name(cn, org), ca_cert.subject, key).add_extension(
        x509.ExtendedKeyUsage([usage]), critical=False
    )
    if sans:
        names = [_san(s) for s in sans]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    _write(pki / stem, key, builder.sign(ca_key, hashes.SHA256()))


def _san(value: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)


def make_all(pki: Path, *, node: str, ips: list[str]) -> None:
    """Everything the control plane and the kubelet need, under PKI."""
    pki.mkdir(parents=True, exist_ok=True)
    ca = make_ca(pki)
    dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    issue(pki, "apiserver", ca, cn="kube-apiserver", sans=[*ips, *dns], server=True)
    for stem, (cn, org) in CLIENTS.items():
        issue(pki, stem, ca, cn=cn, org=org)
    issue(pki, "kubelet-client", ca, cn=f"system:node:{node}", org="system:nodes")
    issue(pki, "kubelet", ca, cn=node, sans=[*ips, node], server=True)
    sa = _key()
    (pki / "sa.key").write_bytes(
        sa.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (pki / "sa.key").chmod(0o600)
    (pki / "sa.pub").write_bytes(
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def kubeconfig(path: Path, *, server: str, pki: Path, stem: str) -> Path:
    """A kubeconfig with absolute paths to the CA and STEM's client cert (JSON is valid YAML)."""
    import json

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "moltbuild", "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")}}
        ],
        "users": [
            {
                "name": stem,
                "user": {
                    "client-certificate": str(pki / f"{stem}.crt"),
                    "client-key": str(pki / f"{stem}.key"),
                },
            }
        ],
        "contexts": [{"name": "moltbuild", "context": {"cluster": "moltbuild", "user": stem}}],
        "current-context": "moltbuild",
    }
    path.write_text(json.dumps(config, indent=2))
    return path
