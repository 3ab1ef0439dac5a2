"""Per-operation rate limiting with every published window enforced at once.

Klaviyo limits each endpoint per account with a burst window (per second), a
steady window (per minute) and sometimes a daily cap (``x-klaviyo-ratelimit``).
``WindowLimiter`` keeps a sliding log of granted slots per window and hands out
*reservations*: the earliest time at which one more request satisfies all
windows. Reservations are FIFO, so concurrent callers queue fairly instead of
stampeding (except while adaptive pacing holds a client's counts below the published ones:
then a request is booked at most one window ahead, and one further back waits unbooked and is
planned again, so it may be passed by one that came later). The same class serves both sides:

* the client awaits ``RateLimiter.book(op)`` (sleeps until its slot), with each
  window lengthened by a small margin: requests reach the server with jitter, and a
  client that plans to the exact edge of a window earns 429s (measured: 70 of 700). A
  request that leaves late (a busy event loop, a wait for a connection) has its slot moved
  to the real time, and ``depart`` holds back a request planned from it until the windows
  hold for the times requests really left, so the jitter the margin must absorb is the
  server's alone;
* the emulator calls ``try_acquire`` and answers 429 + Retry-After when refused.

Adaptive pacing (``RateLimiter.observe``): every counted answer carries ``RateLimit-Limit``,
``-Remaining`` and ``-Reset`` for the steady window of the tier the request was counted in. A
``Limit`` below the published steady count (an account with lower limits) scales that tier's
windows down (the burst in proportion); ``Limit - Remaining`` more than our own requests in the
window is another user of the key (a second tool, a process we do not share a budget with): our
steady count shrinks by what it used, and our burst by its share of the *recent* traffic (how
much its count grew over the last ``SHARE_SECONDS``, against ours): a user that stopped leaves
the whole burst to us at once, not after its requests have left the one-minute window.
``Remaining: 0`` holds the tier back until ``Reset``. A 429 still holds the tier back for
``Retry-After`` and widens its windows.

Budgets shared across processes (``SharedBudget``: Redis, PostgreSQL) replace the local log of
granted slots with one log per (account, operation, tier) that every process books from.

Time comes from an injectable clock so tests use a fake one, never real sleeps.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from klaviyo_spec import Operation, RateLimit, operation

#: After a 429, a client's windows grow by this much, to at most MAX_MARGIN over the published length.
MARGIN_STEP = 0.05
MAX_MARGIN = 0.3
#: After a 429 the burst count becomes this share of what we sent in the last burst window...
BURST_BACKOFF = 0.8
#: ...and grows back by one every this many seconds without a 429.
BURST_REGROW_SECONDS = 5.0
#: A lone client's 429 lowers the burst only if another came within this long after the first's
#: hold: the first is taken as arrival jitter, which the wider windows absorb (``RateLimiter.penalise``).
REPEAT_429_SECONDS = 30.0
#: Before a tier's limit is known, the others wait this long at most for the first request's answer...
PROBE_SECONDS = 5.0
#: ...looking every this many seconds.
PROBE_POLL_SECONDS = 0.01
#: A request whose slot is more than a window ahead waits unbooked and is planned again, at most
#: this many times (each wait ends where its slot came within a window, under the windows of then).
MAX_REPLANS = 100
#: A wake-up later than this after a slot's time moves the slot to when the request really left.
LATE_WAKE_SECONDS = 0.002
#: Another user's share of the burst is judged from the requests both sent in about this long.
SHARE_SECONDS = 2.0
#: ...and each time it is judged, a share moves this part of the way to an even split.
FAIR_DRIFT = 0.5
#: ...within this part of the burst: what each sees of the other's traffic is up to SHARE_SECONDS old.
SHARED_HEADROOM = 0.9


class Clock(Protocol):
    def __call__(self) -> float: ...


@dataclass(frozen=True)
class Booking:
    """A granted slot: the seconds waited for it, and its time (``local``: in this limiter's log)."""

    waited: float
    at: float
    local: bool


@dataclass(frozen=True)
class Departure:
    """A request leaving: the seconds it still waited, its time in the log of planned slots
    (``slot``) and in the log of times requests really left (``sent``)."""

    waited: float
    slot: float
    sent: float
    local: bool


class WindowLimiter:
    """Sliding-window log for one operation: N requests per T seconds, for each window."""

    def __init__(self, windows: tuple[tuple[int, float], ...]) -> None:
        if not windows:
            raise ValueError("a limiter needs at least one window")
        self.windows = tuple((int(n), float(t)) for n, t in windows)
        self._base = self.windows
        #: Counts as published (adapt() lowers ``windows``' counts from the server's answers).
        self.published = tuple(n for n, _ in self.windows)
        #: The burst count 429s taught (headers tell the steady window only), and when it was learned.
        self.learned_burst: int | None = None
        self.learned_at = 0.0
        #: Adaptive pacing: whether an answer told this tier's limit yet, and since when a first
        #: request (the probe) is out to learn it.
        self.known = False
        self.probing_since: float | None = None
        #: (when, requests of other users in the server's steady window) from recent answers.
        self.foreign_seen: deque[tuple[float, int]] = deque()
        #: When the hold of the server's last 429 ended (``RateLimiter.penalise``), None before any.
        self.throttled_until: float | None = None
        # Granted slot times, non-decreasing; long enough for the largest count.
        self._log: deque[float] = deque(maxlen=max(n for n, _ in self.windows))
        # When the requests really left (``depart``), in the order they did.
        self._sent: deque[float] = deque(maxlen=max(n for n, _ in self.windows))
        self._blocked_until = float("-inf")

    @classmethod
    def for_ratelimit(cls, limit: RateLimit, margin: float = 0.0) -> "WindowLimiter":
        """Windows of the published limit, each lengthened by ``margin`` seconds (client safety)."""
        lim = cls(tuple((count, seconds) for count, seconds in limit.windows()))
        lim.widen(margin, margin)
        return lim

    def earliest(self, now: float) -> float:
        """Earliest time >= now (and >= the last reservation) when a slot is free."""
        return self._earliest(self._log, now)

    def _earliest(self, log: deque[float], now: float) -> float:
        at = max(now, self._blocked_until, log[-1] if log else now)
        for count, seconds in self.windows:
            if len(log) >= count:
                # The count-th most recent slot must have left the window.
                at = max(at, log[-count] + seconds)
        return at

    def reserve(self, now: float) -> float:
        """Book the earliest slot and return how long the caller must wait for it."""
        at = self.earliest(now)
        self._log.append(at)
        return at - now

    def correct(self, planned: float, actual: float) -> bool:
        """A slot booked for ``planned`` was used at ``actual`` (the caller woke late: a busy event
        loop). Later slots are counted from when the request really left, as the server sees it.
        False when the slot is no longer in the log (no later slot depends on it)."""
        return _move(self._log, planned, actual)

    def depart(self, now: float) -> float:
        """A request leaves now: book its departure in the log of times requests really left, at
        the earliest time >= now that keeps every window for them (returned). A slot planned
        from a request that then left late (a wait for a connection, a busy event loop) may
        otherwise reach the server too close to it; requests booked but still waiting for a
        connection do not count yet."""
        at = self._earliest(self._sent, now)
        self._sent.append(at)
        return at

    def correct_sent(self, booked: float, actual: float) -> None:
        """A departure booked for ``booked`` (``depart``) reached the wire at ``actual``."""
        _move(self._sent, booked, actual)

    def try_acquire(self, now: float) -> float | None:
        """Take a slot now if one is free; else return seconds until one is (and book nothing)."""
        at = self.earliest(now)
        if at <= now:
            self._log.append(now)
            return None
        return at - now

    @property
    def lowered(self) -> bool:
        """Whether a window's count is below the published one (adaptive pacing lowered it)."""
        return any(n < p for (n, _), p in zip(self.windows, self.published))

    @property
    def base_windows(self) -> tuple[tuple[int, float], ...]:
        """The windows as published (before margins and adaptation)."""
        return self._base

    @property
    def last_granted(self) -> float:
        return self._log[-1] if self._log else float("-inf")

    @property
    def blocked_until(self) -> float:
        return self._blocked_until

    def penalise(self, now: float, seconds: float) -> None:
        """After a server 429, block this operation for ``seconds`` (fill the burst window)."""
        self._blocked_until = max(self._blocked_until, now + seconds)

    def note(self, at: float) -> None:
        """Remember a slot booked elsewhere (a shared budget) in time order."""
        log = self._log
        if not log or at >= log[-1]:
            log.append(at)
        else:
            if log.maxlen is not None and len(log) >= log.maxlen:
                log.popleft()
            log.insert(bisect.bisect_right(log, at), at)

    def count_since(self, since: float) -> int:
        """Slots granted after ``since`` (our requests in a window that ends now)."""
        log = self._log
        return len(log) - bisect.bisect_right(log, since)

    def adapt(self, counts: tuple[int, ...]) -> None:
        """Use these counts (one per window, each >= 1) instead of the current ones."""
        self.windows = tuple((max(1, int(c)), t) for c, (_, t) in zip(counts, self.windows))
        need = max(n for n, _ in self.windows)
        if need > (self._log.maxlen or 0):
            self._log = deque(self._log, maxlen=need)
            self._sent = deque(self._sent, maxlen=need)

    def widen_to(self, margin: float) -> None:
        """Every window at least ``margin`` longer than published."""
        self.windows = tuple((n, max(t, base + margin)) for (n, t), (_, base) in zip(self.windows, self._base))

    def widen(self, seconds: float, most: float) -> None:
        """Lengthen every window by ``seconds`` more, up to ``most`` over the published length:
        a 429 although the windows were kept means the server sees our requests closer together
        than we sent them (its arrival jitter), and each further 429 costs a second of waiting."""
        self.windows = tuple((n, min(t + seconds, base + most)) for (n, t), (_, base) in zip(self.windows, self._base))


def _move(log: deque[float], old: float, new: float) -> bool:
    try:
        log.remove(old)
    except ValueError:
        return False
    log.insert(bisect.bisect_right(log, new), new)
    return True


#: Seconds of Klaviyo's steady window (what ``RateLimit-*`` headers describe).
STEADY_SECONDS = 60.0


class SharedBudget(Protocol):
    """A log of granted slots kept outside this process (Redis, PostgreSQL), for every process
    that uses one key: ``reserve`` books the earliest slot that keeps every window and returns
    how long to wait for it, measured on the budget's own clock (so machines need not agree)."""

    name: str

    async def reserve(self, bucket: str, windows: tuple[tuple[int, float], ...], not_before: float) -> float: ...

    def close(self) -> None: ...


def bucket_name(account: str, operation_id: str, tier: str = "") -> str:
    return f"{account}:{operation_id}:{tier}" if tier else f"{account}:{operation_id}"


def _burst_share(cap: int, ours: int, theirs: int, windows: float) -> int:
    """Our burst beside other users of the key, from the requests each sent in the last
    ``windows`` burst windows. Our share of that traffic, moved part of the way to an even split:
    a share alone kept whoever started first ahead for good (measured: the later of two
    importers at 1 request/s for 18 s beside 17/s). Down always (the larger user makes room);
    up only into room the others leave unused (their rate off the burst), so users who each
    have less than half (three or more) never add up to more than the burst; and all of it within
    ``SHARED_HEADROOM`` of the burst (two importers at an even split of the whole burst drew
    1.0-1.7% 429s, the other's rate being up to two seconds old). The price: beside a light user
    (a dashboard polling now and then) a heavy one keeps about two thirds of the burst; keeping
    all but twice the light one's rate drew 1.45% 429s in two runs of three with two importers."""
    share, room = ours / (ours + theirs), cap * SHARED_HEADROOM
    burst = math.floor(room * (share + (0.5 - share) * FAIR_DRIFT))
    if share < 0.5 and windows > 0:
        burst = min(burst, max(math.floor(room * share), math.floor(room - theirs / windows)))
    return max(1, min(cap, burst))


class RateLimiter:
    """All operations' limiters for one account, shared by every concurrent request.

    A limiter is kept per (operation, tier): Klaviyo counts some requests of an operation in a
    lower tier of their own (``get_profiles`` with predictive analytics). ``budget``: a shared
    budget (Redis, PostgreSQL) booked instead of the local log, for several processes on one key;
    ``account``: the (hashed) account the buckets of that budget are named after."""

    def __init__(
        self,
        *,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        limits: dict[str, RateLimit] | None = None,
        enabled: bool = True,
        margin: float = 0.0,
        adaptive: bool = True,
        budget: SharedBudget | None = None,
        account: str = "",
        probe: bool = False,
    ) -> None:
        self.clock = clock
        self.margin = margin
        self.sleep = sleep
        self.enabled = enabled
        self.adaptive = adaptive
        #: One request per tier first, the others after its answer (see ``_probe``); for limiters
        #: whose requests are answered (the client's), never for a bare limiter nobody answers.
        self.probe = probe and adaptive
        self.budget = budget
        self.account = account
        self._overrides = limits or {}
        self._limiters: dict[tuple[str, str], WindowLimiter] = {}
        # One lock for the books: the limiter may serve clients on several threads' event loops.
        self._lock = threading.Lock()

    def limit_for(self, operation_id: str, tier: str = "") -> RateLimit:
        if not tier:
            return self._overrides.get(operation_id) or operation(operation_id).ratelimit
        for t in operation(operation_id).ratelimit_tiers:
            if t.name == tier:
                return t.ratelimit
        raise KeyError(f"{operation_id} has no rate tier {tier!r}")

    def limiter(self, operation_id: str, tier: str = "") -> WindowLimiter:
        key = (operation_id, tier)
        lim = self._limiters.get(key)
        if lim is None:
            lim = self._limiters[key] = WindowLimiter.for_ratelimit(self.limit_for(operation_id, tier), self.margin)
        return lim

    async def acquire(self, op: Operation | str, tier: str = "") -> float:
        """Wait for a slot of ``op`` (in ``tier``); returns the seconds waited."""
        return (await self.book(op, tier)).waited

    async def book(self, op: Operation | str, tier: str = "") -> Booking:
        """Wait for a slot of ``op`` (in ``tier``); the booking to hand to ``depart`` when the
        request really leaves."""
        if not self.enabled:
            return Booking(0.0, self.clock(), local=False)
        op_id = op if isinstance(op, str) else op.operation_id
        waited = 0.0
        if self.probe:
            waited = await self._probe(op_id, tier)
        replans = 0
        while True:
            with self._lock:
                limiter = self.limiter(op_id, tier)
                now = self.clock()
                if self.budget is not None:
                    windows, not_before = limiter.windows, max(0.0, limiter.blocked_until - now)
                    break
                # While answers keep a client's windows below the published counts (they may grow
                # back), a slot is booked at most one (shortest) window ahead, and a request further
                # back waits unbooked till then and is planned again: slots booked further out keep
                # the pace of the windows they were planned under, and a queue of requests booked
                # while the burst was 1 (another user of the key had most of it) kept one request a
                # second long after the burst grew (measured: an importer at 1/s for 18 s beside
                # one at 17/s). At the published counts nothing can grow: booked at once, in order.
                pause = limiter.earliest(now) - now - min(t for _, t in limiter.windows)
                if pause <= LATE_WAKE_SECONDS or replans >= MAX_REPLANS or not self.probe or not limiter.lowered:
                    delay = limiter.reserve(now)
                    break
            await self.sleep(pause)
            waited += pause
            replans += 1
        if self.budget is not None:
            delay = await self.budget.reserve(bucket_name(self.account, op_id, tier), windows, not_before)
            with self._lock:
                limiter.note(now + delay)  # our own share, for what a 429 teaches
            if delay > 0:
                await self.sleep(delay)
            return Booking(delay + waited, now + delay, local=False)
        at = now + delay
        if delay > 0:
            await self.sleep(delay)
            late = self.clock() - at
            if late > LATE_WAKE_SECONDS:
                with self._lock:
                    if limiter.correct(at, at + late):
                        at += late
        return Booking(delay + waited, at, local=True)

    async def depart(self, operation_id: str, tier: str, booking: Booking) -> Departure:
        """The request booked as ``booking`` leaves now (after a wait for a connection, say), or
        as soon as every window holds for the times the requests before it really left: one
        whose slot was planned from a request that then left late waits, once, for the request
        it concerns, instead of every later window being lengthened (with a shared budget, whose
        log is not ours, that is still what happens: ``left_late``). A request that leaves later
        than its slot counts from when it leaves: later slots are planned from then. Hand the
        departure to ``on_wire`` when the request reaches the wire."""
        if not self.enabled:
            return Departure(0.0, booking.at, booking.at, local=False)
        if not booking.local:
            self.left_late(operation_id, tier, self.clock() - booking.at)
            return Departure(0.0, booking.at, booking.at, local=False)
        with self._lock:
            limiter, now = self.limiter(operation_id, tier), self.clock()
            sent = limiter.depart(now)
            slot = booking.at
            if sent - slot > LATE_WAKE_SECONDS and limiter.correct(slot, sent):
                slot = sent
        wait = sent - now
        if wait > LATE_WAKE_SECONDS:  # within wake-up jitter: leave now
            await self.sleep(wait)
            return Departure(wait, slot, sent, local=True)
        return Departure(0.0, slot, sent, local=True)

    def on_wire(self, operation_id: str, tier: str, departure: Departure) -> None:
        """The request that departed as ``departure`` starts reaching the wire now: when that is
        later than its departure (a busy event loop, a wait for the connection pool; measured up
        to 144 ms with 32 connections), both logs count it from now, as the server will."""
        if not (self.enabled and departure.local):
            return
        with self._lock:
            limiter, now = self.limiter(operation_id, tier), self.clock()
            if now - departure.sent > LATE_WAKE_SECONDS:
                limiter.correct_sent(departure.sent, now)
                limiter.correct(departure.slot, now)

    async def _probe(self, op_id: str, tier: str) -> float:
        """Until an answer has told a tier's limit (the account's may be lower than published,
        another user may have spent it), one request goes first and the others wait for its
        answer (at most ``PROBE_SECONDS``): a run's first wave must not hit a lower limit blind."""
        waited = 0.0
        while True:
            with self._lock:
                lim, now = self.limiter(op_id, tier), self.clock()
                if lim.known:
                    return waited
                if lim.probing_since is None or now - lim.probing_since > PROBE_SECONDS:
                    lim.probing_since = now  # this request is the probe
                    return waited
            await self.sleep(PROBE_POLL_SECONDS)
            waited += PROBE_POLL_SECONDS

    def answered(self, operation_id: str, tier: str) -> None:
        """The server answered a request of this tier (headers or not): stop probing."""
        if self.adaptive:
            with self._lock:
                self.limiter(operation_id, tier).known = True

    def left_late(self, operation_id: str, tier: str, late: float) -> None:
        """With a shared budget (see ``depart``):
        a request left ``late`` seconds after its slot (a busy event loop, a loaded machine,
        a wait for a connection): the slots already booked were planned without it, so it may
        land closer to them than the windows allow. Keep every window at least that much longer
        than published from now on (up to ``MAX_MARGIN``): lateness within the margin never
        brings two requests closer than the server's window."""
        if late > LATE_WAKE_SECONDS and self.enabled and self.margin > 0:
            with self._lock:
                self.limiter(operation_id, tier).widen_to(min(MAX_MARGIN, self.margin + late))

    def observe(self, operation_id: str, tier: str, limit: int, remaining: int, reset: float) -> None:
        """Pace ``operation_id``'s ``tier`` from an answer's ``RateLimit-*`` headers (the state of
        the server's steady window when it answered): its limit, and what others used of it."""
        if not (self.enabled and self.adaptive) or limit <= 0:
            return
        published = self.limit_for(operation_id, tier)
        steady0, burst0 = published.steady_per_minute, published.burst_per_second
        with self._lock:
            lim, now = self.limiter(operation_id, tier), self.clock()
            burst_cap = burst0 if limit >= steady0 else max(1, burst0 * limit // steady0)
            steady, burst = limit, burst_cap
            if self.budget is None:
                # The server counted ``limit - remaining`` requests in its window; ours are the
                # slots we booked in it up to now. More than ours: someone else uses the key.
                ours = lim.count_since(now - STEADY_SECONDS) - lim.count_since(now)
                foreign = max(0, limit - remaining - ours)
                seen = lim.foreign_seen
                seen.append((now, foreign))
                while len(seen) > 1 and seen[1][0] <= now - SHARE_SECONDS:
                    seen.popleft()
                if len(seen) > 1:
                    # Shares of the recent traffic: the window's counts would keep a user that has
                    # stopped (or started early) in our burst for a whole minute (measured: two
                    # importers on one key took 5x the bound, the second crawling at 1/s).
                    since, before = seen[0]
                    ours_recent = lim.count_since(since) - lim.count_since(now)
                    theirs = max(0, foreign - before)
                    if theirs:
                        burst = _burst_share(burst_cap, ours_recent, theirs, (now - since) / lim.base_windows[0][1])
                elif foreign:
                    burst = max(1, math.floor(burst_cap * ours / (ours + foreign)))
                if foreign:
                    steady = max(1, limit - foreign)
            counts = list(lim.published)
            counts[0], counts[1] = min(burst, self._learned_burst(lim, now)), steady
            lim.adapt(tuple(counts))
            lim.known = True
            if remaining <= 0 and reset > 1:
                lim.penalise(now, reset - 1)  # Reset is rounded up: hold back until just before it

    def try_acquire(self, operation_id: str, *, arrived: float | None = None) -> float | None:
        """Non-blocking: None when granted, else seconds until a slot frees (server side).

        ``arrived``: when the request came in, if the caller knows it better than "now"; a
        request counted after a later one is taken as arriving with it (never earlier)."""
        if not self.enabled:
            return None
        limiter, now = self.limiter(operation_id), self.clock()
        at = now if arrived is None else min(now, max(arrived, limiter.last_granted))
        wait = limiter.try_acquire(at)
        return None if wait is None else max(0.0, wait - (now - at))

    @staticmethod
    def _learned_burst(lim: WindowLimiter, now: float) -> int:
        """The burst a 429 taught, grown back by one every ``BURST_REGROW_SECONDS`` without 429."""
        if lim.learned_burst is None:
            return lim.published[0]
        grown = lim.learned_burst + int((now - lim.learned_at) / BURST_REGROW_SECONDS)
        if grown >= lim.published[0]:
            lim.learned_burst = None
            return lim.published[0]
        return grown

    def penalise(self, operation_id: str, seconds: float, tier: str = "") -> None:
        """Record a server-side 429 so other concurrent requests hold back too, and keep this
        operation's requests further apart from now on (up to ``MAX_MARGIN``). With adaptive
        pacing, a 429 although our windows were kept also lowers the burst: the server allowed
        about what we sent in the last second, and no header tells the burst limit. Not the first
        429 of a client the headers show alone on the key (the last answer of the past minute
        counted no other user's requests; no shared budget) while its windows could still widen
        (a margin, not yet at ``MAX_MARGIN``): two requests that arrived closer than they left (the
        network, a busy server) draw it too, and the wider windows are the cure; lowering the
        burst as well cost a fifth of the sending for 10 s (docs/benchmarks.md). A second one
        within ``REPEAT_429_SECONDS`` of the end of the first's hold lowers it."""
        if self.enabled and seconds > 0:
            with self._lock:
                limiter, now = self.limiter(operation_id, tier), self.clock()
                if limiter.blocked_until <= now:  # once for 429s answered together
                    before = limiter.windows
                    if self.margin > 0:
                        limiter.widen(MARGIN_STEP, MAX_MARGIN)
                    seen = limiter.foreign_seen
                    alone = self.budget is None and not (seen and seen[-1][1] > 0 and now - seen[-1][0] <= STEADY_SECONDS)
                    first = limiter.throttled_until is None or now - limiter.throttled_until > REPEAT_429_SECONDS
                    limiter.throttled_until = now + seconds
                    if self.adaptive and not (alone and first and limiter.windows != before):
                        current = min(limiter.windows[0][0], self._learned_burst(limiter, now))
                        if self.budget is None:
                            burst_seconds = limiter.windows[0][1]
                            sent = limiter.count_since(now - burst_seconds) - limiter.count_since(now)
                        else:
                            sent = current  # the other processes' share is not in our log
                        learned = max(1, min(current - 1, math.floor(sent * BURST_BACKOFF)))
                        limiter.learned_burst, limiter.learned_at = learned, now
                        counts = list(c for c, _ in limiter.windows)
                        counts[0] = learned
                        limiter.adapt(tuple(counts))
                limiter.penalise(now, seconds)
