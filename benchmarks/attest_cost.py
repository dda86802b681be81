"""What SBOM + provenance + signature add to `invoke build --push --rebuild`: the same build with
MOLTBUILD_ATTEST=on and a signing key vs MOLTBUILD_ATTEST=off, interleaved."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

from benchmarks.workspace import Workspace


def attest_times(
    ws: Workspace, rounds: int, interleave: Callable, invoke: Callable
) -> tuple[dict, list[str]]:
    keys = ws.base / "keys"
    keys.mkdir(exist_ok=True)
    password = "bench-signing-password"
    subprocess.run(
        ["cosign", "generate-key-pair"],
        cwd=keys,
        env={**ws.env, "COSIGN_PASSWORD": password},
        check=True,
        capture_output=True,
    )
    signed = {
        **ws.env,
        "MOLTBUILD_ATTEST": "on",
        "MOLTBUILD_SIGNING_KEY": str(keys / "cosign.key"),
        "MOLTBUILD_SIGNING_PASSWORD": password,
    }
    bare = {**ws.env, "MOLTBUILD_ATTEST": "off"}
    args = "build", "--push", "--rebuild", "--no-smoke"
    t = interleave(
        rounds,
        {"signed": lambda: invoke(ws, *args, env=signed), "bare": lambda: invoke(ws, *args, env=bare)},
    )
    invoke(ws, *args, env=signed)  # the last run leaves attested images for the package count
    return t, package_counts(ws, signed)


def package_counts(ws: Workspace, env: dict) -> list[str]:
    report = json.loads((ws.clone / "build" / "images.json").read_text())
    notes = []
    for entry in report["images"]:
        ref = f"{entry['repository']}@{entry['digest']}"
        out = subprocess.run(
            ["syft", "scan", f"registry:{ref}", "--quiet", "--output", "spdx-json"],
            env={**env, "SYFT_REGISTRY_INSECURE_USE_HTTP": "true", "SYFT_CHECK_FOR_APP_UPDATE": "false"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        notes.append(f"SBOM of {entry['name']}: {len(json.loads(out).get('packages') or [])} packages")
    return notes
