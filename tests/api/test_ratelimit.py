"""The limiter keeps every published window, under concurrency, on a fake clock."""

import asyncio
import bisect

import pytest

from klaviyo_bridge.api.ratelimit import RateLimiter, WindowLimiter
from klaviyo_spec import RateLimit, operation

from ..fakes import FakeClock as _SharedFakeClock
from ..fakes import VirtualClock


def FakeClock() -> _SharedFakeClock:  # noqa: N802 - time moves only when a test moves it; sleeps are recorded
    return _SharedFakeClock(0.0, sleep_advances=False)


def max_in_window(times: list[float], seconds: float) -> int:
    times = sorted(times)
    best = 0
    for i, t in enumerate(times):
        j = bisect.bisect_left(times, t + seconds - 1e-9)
        best = max(best, j - i)
    return best


async def test_concurrent_acquires_respect_burst_and_steady_windows():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    op = operation("get_events")  # 350/s burst, 3500/m steady, from the spec
    n = 7200
    await asyncio.gather(*(limiter.acquire(op) for _ in range(n)))
    granted = [clock.now + s for s in clock.sleeps] + [0.0] * (n - len(clock.sleeps))
    assert len(granted) == n
    assert max_in_window(granted, 1.0) <= op.ratelimit.burst_per_second
    assert max_in_window(granted, 60.0) <= op.ratelimit.steady_per_minute
    # ...and it is not needlessly slow: 7200 requests need just over two steady windows.
    assert max(granted) == pytest.approx(120.0, abs=1.0)


async def test_burst_window_paces_within_a_minute():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep, limits={"get_lists": RateLimit(3, 100)})
    await asyncio.gather(*(limiter.acquire("get_lists") for _ in range(10)))
    granted = sorted([0.0] * (10 - len(clock.sleeps)) + clock.sleeps)
    assert granted == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]


async def test_daily_limit_is_enforced_where_the_spec_gives_one():
    op = operation("create_list")
    assert op.ratelimit.daily == 150  # Klaviyo: 150 list creations a day
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    for _ in range(151):
        await limiter.acquire(op)
    assert clock.sleeps[-1] == pytest.approx(86400.0)


def test_try_acquire_refuses_without_booking_and_reports_wait():
    lim = WindowLimiter(((2, 1.0), (3, 60.0)))
    assert lim.try_acquire(0.0) is None
    assert lim.try_acquire(0.1) is None
    assert lim.try_acquire(0.2) == pytest.approx(0.8)
    assert lim.try_acquire(1.0) is None
    assert lim.try_acquire(1.5) == pytest.approx(58.5)  # steady window is full now
    assert lim.try_acquire(60.0) is None


async def test_penalty_after_server_429_holds_back_other_requests():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    limiter.penalise("get_profiles", 7)
    waited = await limiter.acquire("get_profiles")
    assert waited == pytest.approx(7)


async def test_disabled_limiter_never_waits():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep, enabled=False)
    for _ in range(1000):
        assert await limiter.acquire("get_accounts") == 0


async def test_margin_lengthens_every_window():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep, limits={"get_lists": RateLimit(2, 10)}, margin=0.25)
    await asyncio.gather(*(limiter.acquire("get_lists") for _ in range(5)))
    granted = sorted([0.0] * (5 - len(clock.sleeps)) + clock.sleeps)
    assert granted == [0, 0, 1.25, 1.25, 2.5]


async def test_a_slot_used_late_counts_from_when_the_request_really_left():
    """The event loop woke the caller 0.3 s after its slot: the server saw the request then, so
    the next requests' windows start there (else they would reach the server too close together)."""
    now = [0.0]

    async def late_sleep(seconds: float) -> None:
        now[0] += seconds + 0.3

    limiter = RateLimiter(clock=lambda: now[0], sleep=late_sleep, limits={"get_lists": RateLimit(1, 100)})
    await limiter.acquire("get_lists")  # at 0, no wait
    await limiter.acquire("get_lists")  # booked for 1.0, left at 1.3
    assert now[0] == pytest.approx(1.3)
    lim = limiter.limiter("get_lists")
    assert lim.earliest(now[0]) == pytest.approx(2.3)  # one per second after the real 1.3, not 2.0


def test_correcting_a_slot_keeps_the_log_in_time_order():
    lim = WindowLimiter(((3, 1.0),))
    for t in (0.0, 0.1, 0.2):
        lim.reserve(t)
    lim.correct(0.1, 0.25)  # the middle request left late, after the third
    assert lim.earliest(0.3) == pytest.approx(1.0)  # the oldest (0.0) still decides
    lim.correct(0.0, 0.4)
    assert lim.earliest(0.5) == pytest.approx(1.2)  # now the oldest is 0.2
    lim.correct(9.0, 9.5)  # a slot no longer in the log: nothing to move
    assert lim.earliest(0.5) == pytest.approx(1.2)


async def test_each_server_429_widens_the_client_windows_up_to_a_limit():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep, limits={"get_lists": RateLimit(1, 100)}, margin=0.1)
    lim = limiter.limiter("get_lists")
    assert lim.windows[0] == (1, pytest.approx(1.1))
    limiter.penalise("get_lists", 1)
    assert lim.windows[0] == (1, pytest.approx(1.15))
    limiter.penalise("get_lists", 1)  # answered together with the first: no second widening
    assert lim.windows[0] == (1, pytest.approx(1.15))
    for _ in range(10):
        clock.now += 2
        limiter.penalise("get_lists", 1)
    assert lim.windows == ((1, pytest.approx(1.3)), (100, pytest.approx(60.3)))
    server = RateLimiter(clock=clock, sleep=clock.sleep, limits={"get_lists": RateLimit(1, 100)})
    server.penalise("get_lists", 1)  # no margin asked for (the emulator's side): windows stay exact
    assert server.limiter("get_lists").windows[0] == (1, 1.0)


async def test_a_lone_clients_first_429_widens_its_windows_and_only_a_second_lowers_its_burst():
    """Alone on the key (no other user's requests in the headers), a 429 although the windows
    were kept is taken first for arrival jitter: the windows widen and the burst stays (lowering
    it too cost a fifth of an export's sending for 10 s). Another 429 within
    ``REPEAT_429_SECONDS`` lowers the burst to about what the server allowed in that second."""
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep, limits={"get_lists": RateLimit(10, 1000)}, margin=0.03)
    lim = limiter.limiter("get_lists")
    for second in range(3):
        clock.now = 100.0 + second * 1.1
        for _ in range(10):
            assert await limiter.acquire("get_lists") == 0.0
        limiter.observe("get_lists", "", 1000, 1000 - 10 * (second + 1), 60)  # the server counted ours only
    limiter.penalise("get_lists", 1)
    assert lim.windows[0] == (10, pytest.approx(1.08))  # wider, the burst kept
    limiter.penalise("get_lists", 1)  # answered together with it: the same 429, not a second
    assert lim.windows[0] == (10, pytest.approx(1.08))
    clock.now += 31.5  # more than 30 s after its hold (1 s) ended: a first again
    limiter.penalise("get_lists", 5)
    assert lim.windows[0] == (10, pytest.approx(1.13))
    clock.now += 33.0  # 33 s after that 429, 28 s after its hold (5 s) ended
    for _ in range(10):
        await limiter.acquire("get_lists")
    limiter.penalise("get_lists", 1)
    assert lim.windows[0][0] == 8  # a second: 80% of the 10 sent in the last second


@pytest.mark.parametrize("margin", [0.0, 0.3], ids=["no margin", "windows already at their widest"])
async def test_a_lone_clients_first_429_lowers_its_burst_when_its_windows_cannot_widen(margin):
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep, limits={"get_lists": RateLimit(10, 1000)}, margin=margin)
    clock.now = 100.0
    for _ in range(10):
        await limiter.acquire("get_lists")
    limiter.penalise("get_lists", 1)
    assert limiter.limiter("get_lists").windows[0][0] == 8


async def test_a_429_while_another_user_shares_the_key_lowers_the_burst_at_once():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep, limits={"get_lists": RateLimit(10, 1000)}, margin=0.03)
    clock.now = 100.0
    for _ in range(5):
        await limiter.acquire("get_lists")
    limiter.observe("get_lists", "", 1000, 1000 - 5 - 5, 60)  # 5 requests of someone else
    burst = limiter.limiter("get_lists").windows[0][0]
    clock.now += 10.0  # the answer that showed them is 10 s old: they are still in the server's minute
    limiter.penalise("get_lists", 1)
    assert limiter.limiter("get_lists").windows[0][0] < burst


def test_server_counts_a_request_when_it_arrived_not_when_its_handler_ran():
    clock = FakeClock()
    server = RateLimiter(clock=clock, sleep=clock.sleep, limits={"get_lists": RateLimit(1, 100)})
    clock.now = 0.3
    assert server.try_acquire("get_lists", arrived=0.0) is None  # handler ran 0.3 s after arrival
    clock.now = 1.1
    assert server.try_acquire("get_lists", arrived=1.05) is None  # 1.05 s after the first arrival: allowed
    clock.now = 1.5
    wait = server.try_acquire("get_lists", arrived=0.9)  # counted after 1.05: taken as arriving then
    assert wait == pytest.approx(0.55)  # next slot at 2.05, 0.55 s from now


class _StepClock:
    """Time moves only through ``to``, which wakes the sleepers that are due."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, fut))
        await fut

    async def to(self, t: float) -> None:
        self.now = t
        for due, fut in list(self._sleepers):
            if due <= t + 1e-9:
                self._sleepers.remove((due, fut))
                fut.set_result(None)
        for _ in range(5):
            await asyncio.sleep(0)


async def test_a_request_planned_from_one_that_left_late_waits_at_departure_and_only_it():
    """One a second: A's slot is 0 and B's (booked meanwhile) 1.0; A waits 0.3 s for a connection.
    B must not leave 0.7 s after A really left: it waits at its departure until 1.3. The windows
    stay as published: the lateness delayed the request it concerned, not every later window."""
    clock = _StepClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep, limits={"get_lists": RateLimit(1, 100)})
    a = await limiter.book("get_lists")
    b_booked = asyncio.ensure_future(limiter.book("get_lists"))
    await asyncio.sleep(0)
    await clock.to(0.3)
    assert (await limiter.depart("get_lists", "", a)).waited == 0.0  # A leaves now, 0.3 s after its slot
    await clock.to(1.0)
    b = await b_booked
    assert b.at == pytest.approx(1.0)  # planned from A's slot
    b_left = asyncio.ensure_future(limiter.depart("get_lists", "", b))
    await asyncio.sleep(0)
    await clock.to(1.2)
    assert not b_left.done()  # 0.9 s after A really left
    await clock.to(1.3)
    assert (await b_left).waited == pytest.approx(0.3)
    lim = limiter.limiter("get_lists")
    assert lim.windows == ((1, 1.0), (100, 60.0))
    assert lim.earliest(clock.now) == pytest.approx(2.3)  # the next one a second after B really left


async def test_a_request_leaving_on_time_does_not_wait_at_departure():
    clock = _StepClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep, limits={"get_lists": RateLimit(2, 100)}, margin=0.1)
    first = [await limiter.book("get_lists") for _ in range(2)]
    assert [(await limiter.depart("get_lists", "", b)).waited for b in first] == [0.0, 0.0]
    third = asyncio.ensure_future(limiter.book("get_lists"))
    await asyncio.sleep(0)
    await clock.to(1.1)
    booking = await third
    assert booking.at == pytest.approx(1.1) and booking.waited == pytest.approx(1.1)
    assert (await limiter.depart("get_lists", "", booking)).waited == 0.0


async def test_requests_booked_but_still_waiting_for_a_connection_do_not_hold_back_those_leaving():
    """Three a second: A, B, C booked at 0 and D, E, F at 1.0. A left late (0.5); B and C are still
    waiting for a connection. At 1.0 the server has counted only A: D and E leave at once, and F
    (the fourth within a second of A) waits until 1.5. Counting B and C (or E and F) as sent made
    every request wait for requests that had not left (measured: 700 requests, 1.12x -> 1.82x)."""
    clock = _StepClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep, limits={"get_lists": RateLimit(3, 100)})
    first = [await limiter.book("get_lists") for _ in range(3)]
    later = [asyncio.ensure_future(limiter.book("get_lists")) for _ in range(3)]
    await asyncio.sleep(0)
    await clock.to(0.5)
    assert (await limiter.depart("get_lists", "", first[0])).waited == 0.0
    await clock.to(1.0)
    d, e, f = [await b for b in later]
    assert (await limiter.depart("get_lists", "", d)).waited == 0.0
    assert (await limiter.depart("get_lists", "", e)).waited == 0.0
    f_left = asyncio.ensure_future(limiter.depart("get_lists", "", f))
    await asyncio.sleep(0)
    assert not f_left.done()
    await clock.to(1.5)
    assert (await f_left).waited == pytest.approx(0.5)


async def test_requests_queued_under_a_lowered_burst_go_sooner_once_it_grows_back():
    """Another user of the key had most of the burst: 20 requests queue at 1 a second. When the
    answers show the burst free again (after 1 s), the queued ones are planned again under it,
    instead of keeping the slots booked under the burst of 1 (the later of two importers on one
    key crawled at 1/s that way)."""
    clock = VirtualClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep, limits={"get_lists": RateLimit(10, 600)}, probe=True)
    lim = limiter.limiter("get_lists")
    lim.known = True
    lim.adapt((1, 600))
    granted: list[float] = []

    async def one() -> None:
        await limiter.acquire("get_lists")
        granted.append(clock.now)

    async def burst_grows_back() -> None:
        await clock.sleep(1.0)
        lim.adapt((10, 600))

    await clock.run(asyncio.gather(burst_grows_back(), *(one() for _ in range(20))))
    assert len(granted) == 20
    assert granted[:2] == [0.0, 1.0]  # one a second while the burst was 1
    assert max_in_window(granted, 1.0) <= 10  # the grown windows are kept...
    assert max(granted) <= 3.0  # ...and used: 20 s if the slots booked under a burst of 1 held


async def test_two_users_of_a_key_move_to_an_even_split_of_the_burst():
    """Two clients on one key, each pacing from the answers' headers only: the one that started
    2 s later begins at a small share of the recent traffic and is not held there (a share
    alone kept it at 1 request/s beside 17); they end near an even split, never together over
    the burst."""
    clock = FakeClock()
    first, later = (RateLimiter(clock=clock, sleep=clock.sleep, limits={"get_lists": RateLimit(22, 10_000)}) for _ in "ab")
    sent = {id(first): 0, id(later): 0}
    history = []
    for second in range(16):
        users = [first, later] if second >= 2 else [first]
        for user in users:
            clock.now = 1000.0 + second
            for _ in range(user.limiter("get_lists").windows[0][0]):
                assert await user.acquire("get_lists") == 0.0  # its own windows hold for this second
                sent[id(user)] += 1
        clock.now = 1000.0 + second + 0.5
        for user in users:
            user.observe("get_lists", "", 10_000, 10_000 - sum(sent.values()), 60)
        a, b = (u.limiter("get_lists").windows[0][0] for u in (first, later))
        history.append((a, b))
        if second >= 2:
            assert a + b <= 22, history
    assert history[2][1] <= 6, history  # the later one starts at about its share of the traffic
    assert abs(history[-1][0] - history[-1][1]) <= 2 and history[-1][1] >= 8, history
