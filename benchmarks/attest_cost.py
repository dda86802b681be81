"""What SBOM + provenance + signature add to `invoke build --push --api-only` of a one-line
change: MOLTBUILD_ATTEST=on with a signing key vs MOLTBUILD_ATTEST=off, interleaved, each run
after its own committed change (so each pushes a new digest and attests it).

    python -m benchmarks.attest_cost [ROUNDS]     (root; buildah, docker-registry, syft, cosign)
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

from benchmarks.workspace import Workspace, workspace

GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.org"]
ARGS = ("build", "--push", "--api-only", "--no-smoke")
SMOKED = ("build", "--push", "--api-only")  # as the issue measured it: the release check included


def one_line_change(ws: Workspace, n: int) -> None:
    app = ws.clone / "api" / "moltbook_api" / "app.py"
    app.write_text(app.read_text() + f"# bench change {n}\n")
    subprocess.run([*GIT, "-C", str(ws.clone), "commit", "-qam", f"bench change {n}"], check=True)


def attest_times(
    ws: Workspace, rounds: int, interleave: Callable, invoke: Callable, args: tuple[str, ...] = ARGS
) -> tuple[dict, list[str]]:
    keys = ws.base / "keys"
    keys.mkdir(exist_ok=True)
    password = "bench-signing-password"
    if not (keys / "cosign.key").exists():  # a second row reuses the first one's pair
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
    count = iter(range(10**6))

    def after_change(env: dict) -> float:
        one_line_change(ws, next(count))
        return invoke(ws, *args, env=env)

    after_change(bare)  # warm-up: bases pulled, the layer cache filled
    t = interleave(rounds, {"signed": lambda: after_change(signed), "bare": lambda: after_change(bare)})
    after_change(signed)  # the last run leaves an attested image for the package count
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


def main(rounds: int = 5) -> None:
    from benchmarks.suite import attest_row, render

    with workspace(MOLTBUILD_BACKEND="buildah") as ws:
        print(render([attest_row(ws, rounds), attest_row(ws, rounds, smoke=True)]))


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
