"""Lane: one step at a time, at once when nothing is pending."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from fwxtwisted.filters.ftp.lane import Lane


def test_a_step_runs_at_once_when_nothing_is_pending() -> None:
    ran: list[str] = []
    Lane(lambda f: None).run(lambda: ran.append("now"))  # type: ignore[func-returns-value]
    assert ran == ["now"]


def test_steps_wait_for_a_pending_one_and_keep_their_order() -> None:
    lane = Lane(lambda f: None)
    pending: Deferred[None] = Deferred()
    ran: list[str] = []
    lane.run(lambda: pending)
    lane.run(lambda: ran.append("second"))  # type: ignore[func-returns-value]
    lane.run(lambda: ran.append("third"))  # type: ignore[func-returns-value]
    assert ran == [] and lane.queued == 2
    pending.callback(None)
    assert ran == ["second", "third"] and lane.queued == 0
    lane.run(lambda: ran.append("fourth"))  # type: ignore[func-returns-value]
    assert ran == ["second", "third", "fourth"]


def test_a_failing_step_is_reported_and_the_lane_goes_on() -> None:
    failures: list[Failure] = []
    lane = Lane(failures.append)

    def broken() -> None:
        raise ValueError("boom")

    lane.run(broken)
    pending: Deferred[None] = Deferred()
    lane.run(lambda: pending)
    pending.errback(ValueError("late"))
    ran: list[str] = []
    lane.run(lambda: ran.append("after"))  # type: ignore[func-returns-value]
    assert [f.value.args[0] for f in failures] == ["boom", "late"]
    assert ran == ["after"]
