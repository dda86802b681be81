"""GitHub's part of the one retry policy (system/retry.py): the GitHub client's policy, and reading a
rate-limit answer (GitHub's own headers and messages) into the wait it asks for."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from moltbuild.system.retry import RetryPolicy, retry_after

# 1 + 5 tries on 5xx and dropped connections, 1 2 4 8 16 s apart (31 s); rate limits are waited out
# as GitHub asks; at most MOLTBUILD_GITHUB_MAX_WAIT (default 300 s) of waiting in all.
GITHUB_RETRY = RetryPolicy(attempts=6, base=1.0, cap=30.0, max_wait=300.0)
# GitHub's documented advice for a secondary rate limit that gives no retry-after: wait a minute.
SECONDARY_DEFAULT = 60.0


@dataclass(frozen=True)
class RateLimit:
    """A rate-limit answer: how long GitHub asks us to wait, and why."""

    wait: float
    kind: str  # "primary" or "secondary"
    because: str  # the header that said so


def rate_limit(status: int, headers: Mapping[str, str], message: str, now: float) -> RateLimit | None:
    """The wait a 403/429 asks for, or None when it is not a rate limit (a missing permission).

    GitHub: `retry-after` (secondary limits, sometimes 429); `x-ratelimit-remaining: 0` with
    `x-ratelimit-reset` epoch seconds (primary); a secondary-limit message with neither: a minute."""
    if status not in (403, 429):
        return None
    lower = {k.lower(): v.strip() for k, v in headers.items()}
    advised = retry_after(lower, now)
    if advised is not None:
        return RateLimit(advised, "secondary", f"retry-after: {lower['retry-after']}")
    reset = lower.get("x-ratelimit-reset", "")
    if lower.get("x-ratelimit-remaining") == "0" and reset.isdigit():
        return RateLimit(max(float(reset) - now, 0.0) + 1.0, "primary", f"x-ratelimit-reset: {reset}")
    if status == 429 or "rate limit" in message.lower():
        return RateLimit(SECONDARY_DEFAULT, "secondary", "no retry-after: GitHub's advice is a minute")
    return None


def at(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S UTC")
