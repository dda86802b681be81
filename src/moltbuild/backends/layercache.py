"""The layer cache in the registry (REPO/cache): what buildah says about it, read back from the
build's own output. A cache failure never fails a build: the backend builds again without it."""

from __future__ import annotations

import re
from pathlib import Path

from moltbuild.system.processes import IDLE_CUT

# buildah 1.28: a refused cache push ends `bud` with "failed pushing cache to ..."; a pull that
# finds no tag is skipped silently, a pull that breaks half-way ends it with "failed while pulling".
FAILURE_RE = re.compile(r"failed (?:while )?(pushing|pulling) cache (?:to|from)[^\n]*", re.I)
# `bud` reads and writes the registry while it builds, and buildah puts no timeout on a registry that
# accepts connections and never answers: with the cache on, a build that moves no byte for this many
# MOLTBUILD_IDLE_TIMEOUTs is cut and built again without the cache (a silent step loses time, never
# the build).
IDLE_FACTOR = 10
PULLED = "--> Cache pulled from remote"
PUSHED = "--> Pushing cache"


def failure(output: str) -> str:
    """A one-line reason when `output` ends with a cache failure ('' when it does not)."""
    if IDLE_CUT in output:
        return "no progress while the registry was in use (a registry that stopped answering?)"
    found = list(FAILURE_RE.finditer(output))
    if not found:
        return ""
    line = found[-1].group(0)
    verb = "push" if found[-1].group(1).lower() == "pushing" else "pull"
    reason = line.rsplit(": ", 1)[-1].strip()[:120] if ": " in line else "refused"
    return f"{verb} of cache layers failed ({reason})"


def outcome(log_path: Path | None, cache: str) -> str:
    """What the build did with the registry cache, counted from its log."""
    text = log_path.read_text(encoding="utf-8", errors="replace") if log_path and log_path.is_file() else ""
    pulled = text.count(PULLED)
    pushed = text.count(PUSHED)
    if not text:
        return f"registry cache {cache}"
    return f"{pulled} layer(s) pulled from {cache}, {pushed} pushed"
