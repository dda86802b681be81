"""How the GitHub client rides out GitHub: which answers are worth another try, how long to wait
before it (bounded exponential backoff for 5xx and dropped connections; the advertised time for a
rate limit, up to a maximum), and saying so each time."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

TRANSIENT = frozenset({500, 502, 503, 504})
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

    GitHub: `retry-after` seconds (secondary limits, sometimes 429); `x-ratelimit-remaining: 0` with
    `x-ratelimit-reset` epoch seconds (primary); a secondary-limit message with neither: a minute."""
    if status not in (403, 429):
        return None
    lower = {k.lower(): v.strip() for k, v in headers.items()}
    retry = lower.get("retry-after", "")
    if retry.isdigit():
        return RateLimit(float(retry), "secondary", f"retry-after: {retry}")
    reset = lower.get("x-ratelimit-reset", "")
    if lower.get("x-ratelimit-remaining") == "0" and reset.isdigit():
        return RateLimit(max(float(reset) - now, 0.0) + 1.0, "primary", f"x-ratelimit-reset: {reset}")
    if status == 429 or "rate limit" in message.lower():
        return RateLimit(SECONDARY_DEFAULT, "secondary", "no retry-after: GitHub's advice is a minute")
    return None


def at(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S UTC")


@dataclass
class Backoff:
    """The retry budget of one request. `sleep`, `now` (wall clock, for x-ratelimit-reset) and
    `say` are parameters so tests move a clock instead of waiting."""

    tries: int = 6  # transient failures: 1 + 5 retries, 1 2 4 8 16 s apart (31 s in all)
    base: float = 1.0
    cap: float = 30.0
    max_wait: float = 300.0  # rate limits: at most this long in all (MOLTBUILD_GITHUB_MAX_WAIT)
    sleep: Callable[[float], None] = time.sleep
    now: Callable[[], float] = time.time
    say: Callable[[str], None] = field(default=lambda line: None)

    def delay(self, failures: int) -> float:
        """Before try `failures + 1`: base * 2^(failures - 1), never above `cap`."""
        return min(self.cap, self.base * 2 ** max(failures - 1, 0))


@dataclass
class Attempts:
    """One request's tries so far, against its Backoff."""

    policy: Backoff
    failures: int = 0
    waited: float = 0.0  # on rate limits

    def transient(self, what: str, problem: str) -> bool:
        """A 5xx or a dropped connection: True after sleeping when another try is due."""
        self.failures += 1
        if self.failures >= self.policy.tries:
            return False
        pause = self.policy.delay(self.failures)
        self.policy.say(
            f"{what}: {problem}; trying again in {pause:g}s ({self.failures + 1}/{self.policy.tries})"
        )
        self.policy.sleep(pause)
        return True

    def limited(self, what: str, limit: RateLimit) -> str | None:
        """Wait as GitHub asks (and say so); or, when that would pass the maximum, the reason not to."""
        if self.waited + limit.wait > self.policy.max_wait:
            until = at(self.policy.now() + limit.wait)
            return (
                f"{what}: GitHub rate limit reached ({limit.kind}; {limit.because}): it asks to wait "
                f"{limit.wait:.0f}s, more than MOLTBUILD_GITHUB_MAX_WAIT={self.policy.max_wait:g}s allows; "
                f"try again after {until} or raise MOLTBUILD_GITHUB_MAX_WAIT"
            )
        self.policy.say(
            f"{what}: GitHub rate limit reached ({limit.kind}; {limit.because}); "
            f"waiting {limit.wait:.0f}s as it asks"
        )
        self.policy.sleep(limit.wait)
        self.waited += limit.wait
        return None
