"""The SBOM of a pushed image, made by syft from the registry (the same for every backend: a
Kaniko-built image never exists on this machine)."""

from __future__ import annotations

import json
from pathlib import Path

from moltbuild.errors import MoltbuildError
from moltbuild.supply.tools import RegistryAccess, require_tool
from moltbuild.system.processes import Runner

SYFT_FORMATS = ("spdx-json", "cyclonedx-json")


def syft_env(access: RegistryAccess) -> dict[str, str]:
    env = {
        "DOCKER_CONFIG": str(access.config_dir),
        "SYFT_CHECK_FOR_APP_UPDATE": "false",  # no phoning home from a build
        "SYFT_REGISTRY_INSECURE_USE_HTTP": "true" if access.plain_http else "false",
    }
    if access.ca:
        env["SYFT_REGISTRY_CA_CERT"] = access.ca
    return env


def generate(runner: Runner, ref: str, access: RegistryAccess, fmt: str, out: Path) -> int:
    """Write the SBOM of `ref` (REPO@DIGEST) to `out`; the number of packages it lists."""
    syft = require_tool(runner, "syft")
    runner.run(
        [syft, "scan", f"registry:{ref}", "--quiet", "--output", f"{fmt}={out}"],
        env=syft_env(access),
        timeout=900,
        what=f"syft SBOM of {ref}",
    )
    return package_count(out)


def package_count(path: Path) -> int:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MoltbuildError(f"syft wrote no readable SBOM at {path} ({exc})") from None
    items = doc.get("packages") if "spdxVersion" in doc else doc.get("components")
    return len(items) if isinstance(items, list) else 0
