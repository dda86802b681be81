"""What is attached to a digest in cosign's tag scheme, read and written through the registry
client: `sha256-<hex>.att` (DSSE envelopes, one layer each: unsigned ones, or envelopes cosign
signed with a key) and `sha256-<hex>.sig`.

Unsigned attestations use cosign's own layout with an empty signature list, so `cosign download
attestation` shows them and a later signed run can be told apart from them."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from moltbuild.registry.client import RegistryClient
from moltbuild.supply.provenance import INTOTO_PAYLOAD, decode_envelope

DSSE_LAYER = "application/vnd.dsse.envelope.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"


def tag_for(digest: str, suffix: str) -> str:
    """cosign's tag scheme: sha256:<hex> -> sha256-<hex>.<suffix>."""
    return digest.replace(":", "-") + "." + suffix


@dataclass(frozen=True)
class Attestation:
    predicate_type: str
    statement: dict[str, Any]
    signed: bool


def read(client: RegistryClient, name: str, digest: str) -> list[Attestation]:
    """Every attestation attached to `digest` (signed or not); [] when none."""
    found = client.manifest(name, tag_for(digest, "att"), method="GET")
    if found is None:
        return []
    try:
        layers = json.loads(found.body).get("layers") or []
    except (ValueError, AttributeError):
        return []
    out = []
    for layer in layers:
        if not isinstance(layer, dict) or layer.get("mediaType") != DSSE_LAYER:
            continue
        raw = client.blob(name, str(layer.get("digest")))
        statement = decode_envelope(raw)
        if statement is not None:
            signed = bool(json.loads(raw).get("signatures") or [])
            out.append(Attestation(str(statement.get("predicateType", "")), statement, signed))
    return out


def is_signed(client: RegistryClient, name: str, digest: str) -> bool:
    return client.manifest(name, tag_for(digest, "sig")) is not None


def envelope(statement: Mapping[str, Any]) -> bytes:
    payload = base64.b64encode(json.dumps(statement, sort_keys=True).encode()).decode()
    return json.dumps({"payloadType": INTOTO_PAYLOAD, "payload": payload, "signatures": []}).encode()


def write_unsigned(
    client: RegistryClient, name: str, digest: str, statements: list[Mapping[str, Any]]
) -> str:
    """Attach `statements` unsigned, replacing earlier unsigned ones of the same predicate types
    and keeping any signed ones; the `.att` reference."""
    items = [(envelope(s), str(s["predicateType"])) for s in statements]
    return write(client, name, digest, items, replace_signed=False)


def write(
    client: RegistryClient, name: str, digest: str, items: list[tuple[bytes, str]], *, replace_signed: bool
) -> str:
    """Attach DSSE envelopes (each with its predicate type) in one `.att` manifest write, as
    `cosign attest` lays them out; earlier ones of the same types are replaced (signed ones only
    when `replace_signed`: an unsigned run never drops a signature). The `.att` reference."""
    kept = _kept_layers(client, name, digest, {kind for _, kind in items}, replace_signed)
    layers = list(kept)
    for data, kind in items:
        layers.append(
            {
                "mediaType": DSSE_LAYER,
                "size": len(data),
                "digest": client.push_blob(name, data),
                "annotations": {SIGNATURE_ANNOTATION: "", "predicateType": kind},
            }
        )
    config = json.dumps(
        {
            "architecture": "",
            "os": "",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [x["digest"] for x in layers]},
        }
    ).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": client.push_blob(name, config)},
        "layers": layers,
    }
    tag = tag_for(digest, "att")
    client.put_manifest(name, tag, json.dumps(manifest).encode(), OCI_MANIFEST)
    return tag


def _kept_layers(
    client: RegistryClient, name: str, digest: str, replaced: set[str], replace_signed: bool
) -> list[dict[str, Any]]:
    found = client.manifest(name, tag_for(digest, "att"), method="GET")
    if found is None:
        return []
    layers = json.loads(found.body).get("layers") or []
    kept = []
    for layer in layers:
        kind = (layer.get("annotations") or {}).get("predicateType", "")
        if kind in replaced and (
            replace_signed or not json.loads(client.blob(name, layer["digest"])).get("signatures")
        ):
            continue  # one of the same kind this write replaces
        kept.append(layer)
    return kept
