"""The SBOM of a pushed image, made by syft from the registry (the same for every backend: a
Kaniko-built image never exists on this machine)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from moltbuild.errors import CommandError, MoltbuildError
from moltbuild.supply.tools import RegistryAccess, require_tool
from moltbuild.system.processes import Runner

SYFT_FORMATS = ("spdx-json", "cyclonedx-json")
SYFT_TIMEOUT = 600  # seconds
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


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
    what = f"syft SBOM of {ref}"
    # Not --quiet: that silences syft's own error too, leaving only an exit code.
    argv = [syft, "scan", f"registry:{ref}", "--output", f"{fmt}={out}"]
    # Bounded: the registry answered for every blob just before (Attester.attest), so a scan that
    # is still running after this long is stuck, not slow.
    result = runner.run(argv, env=syft_env(access), timeout=SYFT_TIMEOUT, what=what, check=False)
    if not result.ok:
        said = runner.mask(syft_said(result.stderr or result.stdout))
        raise CommandError(runner.mask_argv(argv), result.returncode, said, what=runner.mask(what))
    return package_count(out)


def syft_said(stderr: str, limit: int = 400) -> str:
    """syft's error as one line: its ERROR line and the causes listed under it, colours dropped."""
    lines = [_ANSI.sub("", line).strip() for line in stderr.splitlines()]
    lines = [line for line in lines if line]
    start = next((i for i, line in enumerate(lines) if "ERROR" in line), max(len(lines) - 3, 0))
    text = " ".join(lines[start:])
    text = re.sub(r"^\[\d+\]\s*ERROR\s*", "", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def package_count(path: Path) -> int:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MoltbuildError(f"syft wrote no readable SBOM at {path} ({exc})") from None
    items = doc.get("packages") if "spdxVersion" in doc else doc.get("components")
    return len(items) if isinstance(items, list) else 0
