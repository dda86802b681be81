"""The one retry policy (moltbuild.system.retry): transient or not, Retry-After in seconds and as
an HTTP date, the backoff and its cap, the bound on the total wait; every wait goes through an
injected clock, so nothing here sleeps."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
import requests

from moltbuild.system.retry import (
    Clock,
    RetryPolicy,
    retry_after,
    transient_error,
    transient_status,
    transient_text,
)

NOW = 1_700_000_000.0


class Naps(list):
    """The waits asked for; the wall clock moves with them."""

    def __init__(self) -> None:
        super().__init__()
        self.now = NOW

    def sleep(self, seconds: float) -> None:
        self.append(seconds)
        self.now += seconds

    def clock(self) -> Clock:
        return Clock(sleep=self.sleep, now=lambda: self.now)


@pytest.mark.parametrize(
    ("status", "transient"),
    [
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (501, False),
        (200, False),
    ],
)
def test_which_statuses_are_transient(status, transient):
    assert transient_status(status) is transient


def test_dropped_connections_and_timeouts_are_transient_other_errors_not():
    assert transient_error(requests.ConnectionError("reset"))
    assert transient_error(requests.ReadTimeout("slow"))
    assert transient_error(requests.exceptions.ChunkedEncodingError("cut"))
    assert not transient_error(requests.exceptions.InvalidURL("nope"))
    assert not transient_error(ValueError("a bug"))


@pytest.mark.parametrize(
    ("output", "transient"),
    [
        ("read: connection reset by peer", True),
        ("received unexpected HTTP status: 503 Service Unavailable", True),
        ("toomanyrequests: too many requests", True),
        ("dial tcp: i/o timeout", True),
        ("unexpected EOF", True),
        ("unauthorized: authentication required", False),
        ("manifest unknown", False),
        ("listening on :5030", False),  # a number that merely contains a status
    ],
)
def test_tool_output_that_reads_transient(output, transient):
    assert transient_text(output) is transient


def test_retry_after_in_seconds_and_as_an_http_date():
    assert retry_after({"Retry-After": "7"}, NOW) == 7.0
    assert retry_after({"retry-after": " 0.5 "}, NOW) == 0.5
    date = format_datetime(datetime.fromtimestamp(NOW + 30, UTC), usegmt=True)
    assert retry_after({"Retry-After": date}, NOW) == 30.0
    past = format_datetime(datetime.fromtimestamp(NOW - 30, UTC), usegmt=True)
    assert retry_after({"Retry-After": past}, NOW) == 0.0  # already past: no negative wait
    assert retry_after({"Retry-After": "-5"}, NOW) == 0.0
    assert retry_after({"Retry-After": "soon"}, NOW) is None
    assert retry_after({}, NOW) is None


def test_the_backoff_doubles_up_to_its_cap():
    policy = RetryPolicy(base=0.5, cap=3)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1, 2, 3, 3]


def test_the_tries_end_after_the_attempts_and_every_wait_goes_through_the_clock():
    naps = Naps()
    tries = RetryPolicy(attempts=4, base=1, cap=30, max_wait=100, clock=naps.clock()).start()
    while (wait := tries.after_failure()) is not None:
        tries.pause(wait)
    assert naps == [1, 2, 4]  # four tries: three waits
    assert tries.failures == 4 and tries.waited == 7
    assert naps.now == NOW + 7


def test_a_wait_the_server_advises_replaces_the_backoff():
    tries = RetryPolicy(attempts=5, base=1, clock=Naps().clock()).start()
    assert tries.after_failure(advised=12.0) == 12.0
    assert tries.after_failure() == 2.0  # the backoff of the second failure


def test_the_total_wait_is_bounded():
    naps = Naps()
    tries = RetryPolicy(attempts=10, base=4, cap=30, max_wait=10, clock=naps.clock()).start()
    while (wait := tries.after_failure()) is not None:
        tries.pause(wait)
    assert naps == [4]  # 4 + 8 would pass the 10 s bound
    assert tries.failures == 2


def test_an_advised_wait_beyond_the_bound_is_not_waited():
    naps = Naps()
    tries = RetryPolicy(attempts=10, max_wait=60, clock=naps.clock()).start()
    assert tries.after_failure(advised=3600) is None
    assert tries.fits(60) and not tries.fits(60.5)
    assert naps == []


def test_a_policy_changed_in_one_field_keeps_the_others():
    base = RetryPolicy(attempts=6, base=1, cap=30, max_wait=300)
    changed = base.but(max_wait=42)
    assert (changed.attempts, changed.base, changed.cap, changed.max_wait) == (6, 1, 30, 42)
    assert base.max_wait == 300
