"""The SBOM of a pushed image, made by syft: from the registry (every backend: a Kaniko-built image
never exists on this machine), or from the built image's mounted filesystem before its push (the
caller checks that the pushed image has the same config)."""

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
    # Bounded: the registry answered for every blob just before (Attester.attest), so a scan that
    # is still running after this long is stuck, not slow.
    return _scan(runner, [f"registry:{ref}"], syft_env(access), fmt, out, f"syft SBOM of {ref}")


def generate_local(runner: Runner, root: Path, name: str, image_id: str, fmt: str, out: Path) -> int:
    """Write the SBOM of a built image's filesystem mounted at `root` to `out`, named `name` (its
    repository) at version `image_id` (its config's digest); the number of packages. syft looks
    with the catalogers it uses for an image (a directory's would add declared, uninstalled ones):
    the packages and files are the ones a scan of the pushed image lists."""
    env = {"SYFT_CHECK_FOR_APP_UPDATE": "false"}
    argv = [f"dir:{root}", "--override-default-catalogers", "image", "--source-name", name]
    argv += ["--source-version", image_id]
    return _scan(runner, argv, env, fmt, out, f"syft SBOM of {name} (its local filesystem)")


def _scan(runner: Runner, source: list[str], env: dict[str, str], fmt: str, out: Path, what: str) -> int:
    syft = require_tool(runner, "syft")
    # Not --quiet: that silences syft's own error too, leaving only an exit code.
    argv = [syft, "scan", *source, "--output", f"{fmt}={out}"]
    result = runner.run(argv, env=env, timeout=SYFT_TIMEOUT, what=what, check=False)
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
