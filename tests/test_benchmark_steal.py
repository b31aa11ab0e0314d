"""The benchmark's guard against host steal: which attempt is kept, and what is said."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.procs import STEAL_LIMIT, STEAL_RETRIES, leastStolen, stealNote


def attempts(stolen: list[float]) -> tuple[Callable[[], dict[str, float]], list[int]]:
    """A measure() that returns the given steal shares in turn (rate = attempt index)."""
    calls: list[int] = []

    def measure() -> dict[str, float]:
        calls.append(len(calls))
        return {"stolen": stolen[len(calls) - 1], "rate": float(len(calls))}

    return measure, calls


def test_quiet_first_attempt_is_kept_alone() -> None:
    measure, calls = attempts([2.0, 50.0])
    result, stolen = leastStolen(measure)
    assert (result["rate"], stolen, len(calls)) == (1.0, [2.0], 1)


def test_stolen_attempt_is_measured_again_until_quiet() -> None:
    measure, calls = attempts([40.0, 5.0, 1.0])
    result, stolen = leastStolen(measure)
    assert (result["rate"], stolen, len(calls)) == (2.0, [40.0, 5.0], 2)


def test_retries_are_bounded_and_least_stolen_kept() -> None:
    measure, calls = attempts([40.0, 20.0, 30.0, 0.0])
    result, stolen = leastStolen(measure)
    assert len(calls) == 1 + STEAL_RETRIES == 3
    assert (result["rate"], result["stolen"]) == (2.0, 20.0)


def test_quiet_run_gets_no_note() -> None:
    assert stealNote(0, [STEAL_LIMIT]) is None


def test_repeated_run_note_names_every_attempt() -> None:
    assert stealNote(1, [40.0, 20.0, 30.0]) == (
        "run 2: measured 3 times for host steal (40%, 20%, 30%); the 20% attempt kept"
    )


def test_each_stolen_attempt_is_said() -> None:
    measure, _ = attempts([40.0, 3.0])
    said: list[str] = []
    leastStolen(measure, said.append, "fwx tcp")
    assert said == ["  fwx tcp: 40% stolen by the host"]
