"""The one retry policy: how many tries, the capped exponential backoff between them, the bound on
the total wait, which failures are transient (HTTP statuses, dropped connections and timeouts, a
tool's output saying so), Retry-After in seconds or as an HTTP date, and the clock the waits go
through (a parameter, so tests record the waits instead of sleeping them).

The registry client, registry/auth, GitHub (ci/github, ci/backoff for its rate-limit headers), the
pin push (ci/pins) and a backend's push (backends/contract) all retry through this module."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime

import requests

# Answers worth another try: rate limited, or the server (or a proxy before it) is failing.
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
# Failures before any answer worth another try; DNS failures are refused by the caller first.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
# The same, as a tool (buildah, docker, git) writes them into its error output.
_TRANSIENT_TEXT = re.compile(
    r"connection (reset|refused)|timeout|timed out|temporarily unavailable|too many requests|"
    r"unexpected EOF|broken pipe|TLS handshake|\b(" + "|".join(map(str, sorted(TRANSIENT_STATUS))) + r")\b",
    re.I,
)


def transient_status(status: int) -> bool:
    return status in TRANSIENT_STATUS


def transient_error(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_ERRORS)


def transient_text(output: str) -> bool:
    """A tool's error output that reads like the network or the registry hiccuped, not a refusal."""
    return bool(_TRANSIENT_TEXT.search(output))


def retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """The wait a `Retry-After` header asks for (seconds, or an HTTP date against the wall clock
    `now`), never negative; None when it is missing or unreadable."""
    value = next((v.strip() for k, v in headers.items() if k.lower() == "retry-after"), "")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - now, 0.0)
    except (TypeError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class Clock:
    """Where waits go and what time it is (wall clock: Retry-After dates, rate-limit resets)."""

    sleep: Callable[[float], None] = time.sleep
    now: Callable[[], float] = time.time


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all; before try n+1, `base * 2^(n-1)` seconds capped at `cap` (or what the
    server asked for); never more than `max_wait` seconds of waiting in all."""

    attempts: int = 5
    base: float = 0.5
    cap: float = 30.0
    max_wait: float = 60.0
    clock: Clock = field(default_factory=Clock)

    def delay(self, failures: int) -> float:
        """The backoff after `failures` failed tries."""
        return min(self.cap, self.base * 2 ** max(failures - 1, 0))

    def but(self, **changes: object) -> RetryPolicy:
        """This policy with some fields changed (a setting's max_wait, a test's clock)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def start(self) -> Tries:
        return Tries(self)


@dataclass
class Tries:
    """One operation's tries so far against its policy."""

    policy: RetryPolicy
    failures: int = 0
    waited: float = 0.0

    def after_failure(self, advised: float | None = None) -> float | None:
        """A transient failure: the wait before the next try (`advised` by the server, else the
        backoff), or None when the tries are used up or the wait would pass the total bound."""
        self.failures += 1
        if self.failures >= self.policy.attempts:
            return None
        wait = self.policy.delay(self.failures) if advised is None else advised
        return wait if self.fits(wait) else None

    def fits(self, seconds: float) -> bool:
        """Would waiting `seconds` more stay within the total bound?"""
        return self.waited + seconds <= self.policy.max_wait

    def pause(self, seconds: float) -> None:
        self.policy.clock.sleep(seconds)
        self.waited += seconds
