"""PortAllocator on real loopback sockets: runs of consecutive ports, skips, exhaustion."""

from __future__ import annotations

import random
import socket
from collections.abc import Callable, Iterator

import pytest
from twisted.internet.error import CannotListenError

from fwxtwisted.errors import PortRangeExhausted, PortUnavailable
from fwxtwisted.net.ports import ANY_IP, DEFAULT_RANGE, PortAllocator, portSlice

HOST = "127.0.0.1"
SEEDS = range(12)


class Held:
    """A listening socket standing for a bound listener; released at once."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.sock.bind((HOST, port))
            self.sock.listen(1)
        except OSError as e:
            self.sock.close()
            raise CannotListenError(HOST, port, e) from None

    def stopListening(self) -> None:
        self.sock.close()


class Sockets:
    """Every socket a test binds, closed at its end."""

    def __init__(self) -> None:
        self.held: list[Held] = []

    def bind(self, index: int, port: int) -> Held:
        held = Held(port)
        self.held.append(held)
        return held

    def freeRange(self, size: int, low: int = 30000) -> tuple[int, int]:
        """A range of C{size} ports where nothing listens now."""
        for start in range(low, low + 3000, size):
            try:
                probes = [Held(port) for port in range(start, start + size)]
            except CannotListenError:
                continue
            for probe in probes:
                probe.stopListening()
            return start, start + size - 1
        raise RuntimeError(f"no {size} free consecutive ports from {low}")

    def occupy(self, port: int) -> None:
        self.held.append(Held(port))

    def close(self) -> None:
        for held in self.held:
            held.stopListening()


@pytest.fixture
def sockets() -> Iterator[Sockets]:
    bound = Sockets()
    yield bound
    bound.close()


def ports(run: list[Held]) -> list[int]:
    return [held.port for held in run]


def allocator(low: int, high: int, seed: int = 0) -> PortAllocator:
    return PortAllocator({HOST: (low, high)}, rng=random.Random(seed))


def test_run_is_consecutive_and_inside_the_range(sockets: Sockets) -> None:
    low, high = sockets.freeRange(10)
    run = ports(allocator(low, high).bindRun(HOST, 3, sockets.bind))
    assert run == [run[0], run[0] + 1, run[0] + 2]
    assert low <= run[0] and run[2] <= high


def test_index_passed_to_bind_follows_the_run(sockets: Sockets) -> None:
    low, high = sockets.freeRange(5)
    calls: list[tuple[int, int]] = []

    def bind(index: int, port: int) -> Held:
        calls.append((index, port))
        return sockets.bind(index, port)

    run = ports(allocator(low, high).bindRun(HOST, 3, bind))
    assert calls == [(0, run[0]), (1, run[1]), (2, run[2])]


@pytest.mark.parametrize("seed", SEEDS)
def test_taken_port_is_skipped(sockets: Sockets, seed: int) -> None:
    low, high = sockets.freeRange(4)
    sockets.occupy(low + 1)
    assert ports(allocator(low, high, seed).bindRun(HOST, 2, sockets.bind)) == [low + 2, low + 3]


@pytest.mark.parametrize("seed", SEEDS)
def test_free_run_before_a_failed_one_at_the_end_is_found(sockets: Sockets, seed: int) -> None:
    # Whatever the random start, the only free run (low, low+1) is found, also when
    # the search starts on the run that fails at the top of the range and must wrap.
    low, high = sockets.freeRange(3)
    sockets.occupy(high)
    assert ports(allocator(low, high, seed).bindRun(HOST, 2, sockets.bind)) == [low, low + 1]


@pytest.mark.parametrize("seed", SEEDS)
def test_failed_run_releases_what_it_bound(sockets: Sockets, seed: int) -> None:
    low, high = sockets.freeRange(3)
    sockets.occupy(high)
    with pytest.raises(PortRangeExhausted):
        allocator(low + 1, high, seed).bindRun(HOST, 2, sockets.bind)
    # low + 1 was bound by the failed run, then released.
    sockets.occupy(low + 1)


def test_every_port_taken_is_exhaustion_naming_ip_and_range(sockets: Sockets) -> None:
    low, high = sockets.freeRange(3)
    for port in range(low, high + 1):
        sockets.occupy(port)
    with pytest.raises(PortRangeExhausted) as caught:
        allocator(low, high).bindRun(HOST, 1, sockets.bind)
    assert str(caught.value) == f"no 1 free consecutive port(s) on {HOST} in {low}-{high}"


def test_no_free_run_long_enough_is_exhaustion(sockets: Sockets) -> None:
    low, high = sockets.freeRange(5)
    sockets.occupy(low + 2)
    with pytest.raises(PortRangeExhausted):
        allocator(low, high).bindRun(HOST, 3, sockets.bind)


def test_run_longer_than_the_range_is_refused_without_binding() -> None:
    tried: list[int] = []

    def bind(index: int, port: int) -> None:
        tried.append(port)

    with pytest.raises(PortRangeExhausted) as caught:
        allocator(30000, 30002).bindRun(HOST, 4, bind)
    assert str(caught.value) == (
        f"4 consecutive ports asked for on {HOST}, range 30000-30002 is smaller"
    )
    assert tried == []


def test_count_below_one_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        allocator(30000, 30010).bindRun(HOST, 0, lambda i, p: None)


def test_explicit_run_binds_exactly_those_ports(sockets: Sockets) -> None:
    low, _ = sockets.freeRange(2)
    run = PortAllocator().bindExact(HOST, low, 2, sockets.bind)
    assert ports(run) == [low, low + 1]


def test_explicit_port_taken_is_unavailable_and_releases_the_rest(sockets: Sockets) -> None:
    low, _ = sockets.freeRange(3)
    sockets.occupy(low + 2)
    with pytest.raises(PortUnavailable) as caught:
        PortAllocator().bindExact(HOST, low, 3, sockets.bind)
    assert str(caught.value) == f"port {low + 2} on {HOST} is not available"
    sockets.occupy(low)
    sockets.occupy(low + 1)


def test_explicit_run_past_65535_is_unavailable() -> None:
    with pytest.raises(PortUnavailable) as caught:
        PortAllocator().bindExact(HOST, 65535, 2, lambda i, p: None)
    assert str(caught.value) == f"ports 65535-65536 on {HOST} exceed 65535"


def test_ranges_are_per_ip_with_a_default_for_the_rest() -> None:
    ports_ = PortAllocator({HOST: (40000, 40009), ANY_IP: (41000, 41009)})
    assert ports_.rangeFor(HOST) == (40000, 40009)
    assert ports_.rangeFor("127.0.0.2") == (41000, 41009)
    assert PortAllocator().rangeFor(HOST) == DEFAULT_RANGE


def test_range_given_by_the_caller_overrides_the_configured_one(sockets: Sockets) -> None:
    low, high = sockets.freeRange(2)
    bindRun: Callable[..., list[Held]] = allocator(30000, 30999).bindRun
    assert ports(bindRun(HOST, 2, sockets.bind, (low, high))) == [low, high]


def test_random_start_spreads_allocations(sockets: Sockets) -> None:
    low, high = sockets.freeRange(50)
    ports_ = PortAllocator({HOST: (low, high)}, rng=random.Random(7))
    starts = set()
    for _ in range(10):
        run = ports_.bindRun(HOST, 1, sockets.bind)
        starts.add(run[0].port)
        run[0].stopListening()
    assert len(starts) > 1


# Even first ports (RTP on the even port, RTCP on the odd one after it).


@pytest.mark.parametrize("seed", SEEDS)
def test_even_run_starts_on_an_even_port_in_an_odd_bounded_range(
    sockets: Sockets, seed: int
) -> None:
    low, high = sockets.freeRange(12)
    # Odd bounds on both ends: the first even port is low+1 or low+2.
    oddLow = low if low % 2 else low + 1
    run = ports(allocator(oddLow, high, seed).bindRun(HOST, 2, sockets.bind, even=True))
    assert run[0] % 2 == 0
    assert run == [run[0], run[0] + 1]
    assert oddLow <= run[0] and run[1] <= high


@pytest.mark.parametrize("seed", SEEDS)
def test_even_run_skips_past_a_taken_odd_port(sockets: Sockets, seed: int) -> None:
    low, high = sockets.freeRange(8)
    base = low + (low % 2)
    # Runs starting at base and base+2 are broken; only base+4 fits in base..base+5.
    sockets.occupy(base + 1)
    sockets.occupy(base + 2)
    bindRun = allocator(base, base + 5, seed).bindRun
    assert ports(bindRun(HOST, 2, sockets.bind, even=True)) == [base + 4, base + 5]


@pytest.mark.parametrize("seed", SEEDS)
def test_even_run_is_never_placed_on_an_odd_start_even_when_one_is_free(
    sockets: Sockets, seed: int
) -> None:
    low, _ = sockets.freeRange(8)
    base = low + (low % 2)
    # base and base+3 are taken: the free odd-started run base+1..base+2 must not be used.
    sockets.occupy(base)
    sockets.occupy(base + 3)
    with pytest.raises(PortRangeExhausted) as caught:
        allocator(base, base + 3, seed).bindRun(HOST, 2, sockets.bind, even=True)
    assert str(caught.value) == (
        f"no 2 free consecutive port(s) from an even port on {HOST} in {base}-{base + 3}"
    )


def test_even_run_that_cannot_fit_the_range_is_refused_without_binding() -> None:
    tried: list[int] = []

    def bind(index: int, port: int) -> None:
        tried.append(port)

    # 30001-30002 holds two ports, but no pair starting on an even port.
    with pytest.raises(PortRangeExhausted) as caught:
        allocator(30001, 30002).bindRun(HOST, 2, bind, even=True)
    assert str(caught.value) == (
        f"2 consecutive ports from an even port asked for on {HOST}, "
        "range 30001-30002 holds no such run"
    )
    assert tried == []


def test_even_single_port_in_a_one_port_odd_range_is_refused() -> None:
    with pytest.raises(PortRangeExhausted):
        allocator(30001, 30001).bindRun(HOST, 1, lambda i, p: None, even=True)


def test_explicit_even_run_refuses_an_odd_first_port(sockets: Sockets) -> None:
    low, _ = sockets.freeRange(4)
    odd = low if low % 2 else low + 1
    with pytest.raises(PortUnavailable) as caught:
        PortAllocator().bindExact(HOST, odd, 2, sockets.bind, even=True)
    assert str(caught.value) == f"port {odd} on {HOST} is odd: an even first port was asked"
    even = odd + 1
    assert ports(PortAllocator().bindExact(HOST, even, 2, sockets.bind, even=True)) == [
        even,
        even + 1,
    ]


def test_a_slice_is_a_contiguous_part_and_the_last_takes_the_remainder() -> None:
    parts = [portSlice((20000, 29999), index, 3) for index in range(3)]
    assert parts == [(20000, 23332), (23333, 26665), (26666, 29999)]


def test_a_range_too_small_to_slice_is_shared_whole() -> None:
    assert portSlice((20000, 20006), 1, 2) == (20000, 20006)
    assert portSlice((20000, 20007), 1, 2) == (20004, 20007)
    assert portSlice((20000, 29999), 0, 1) == (20000, 29999)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_a_sliced_allocator_binds_only_in_its_slice_and_names_the_whole_range(
    sockets: Sockets, index: int
) -> None:
    base, top = sockets.freeRange(30)
    other, _ = sockets.freeRange(30, low=top + 1)
    allocator = PortAllocator({HOST: (base, top)}, rng=random.Random(index), slice=(index, 3))
    assert allocator.rangeFor(HOST) == (base, top)
    low = base + 10 * index
    runs = [allocator.bindRun(HOST, 2, sockets.bind) for _ in range(5)]
    assert all(low <= held.port <= low + 9 for run in runs for held in run)
    # An explicit range (a listener's own) is sliced too.
    [held] = allocator.bindRun(HOST, 1, sockets.bind, portRange=(other, other + 29))
    assert other + 10 * index <= held.port <= other + 10 * index + 9
