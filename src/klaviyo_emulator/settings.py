"""Settings of one emulated Klaviyo account (what the CLI and the tests choose)."""

from __future__ import annotations

from dataclasses import dataclass

from .clock import parse_clock
from .faults import parse_faults
from .limits import parse_overrides

#: The key the emulator accepts unless told otherwise. Deliberately not shaped like a
#: real private key (``pk_`` + 30+ hex chars) so secret scanners never flag it.
DEFAULT_API_KEY = "pk_emulator_demo_key"


@dataclass(frozen=True)
class EmulatorSettings:
    """Everything that determines the synthetic account and how the server behaves.

    Same ``seed`` and counts give byte-identical responses.
    """

    seed: int = 1
    profiles: int = 1000
    events: int = 10000
    lists: int = 5
    segments: int = 4
    campaigns: int = 24
    templates: int = 12
    flows: int = 8
    api_key: str = DEFAULT_API_KEY
    #: More keys the server accepts, each standing for one more account (``klaviyo-bridge worker``'s
    #: tests and benchmark run many accounts): they share this account's data and limits.
    extra_api_keys: tuple[str, ...] = ()
    rate_limits: bool = True
    #: The account's own limits where they differ from the published ones (``limits.py``), e.g.
    #: "get_profiles=5/50,*=0.5"; None: the spec's.
    rate_limit_overrides: str | None = None
    latency_ms: int = 0
    #: Fixed "now" of the account (epoch seconds): data spreads over the two years before it.
    now: int = 1_767_225_600  # 2026-01-01T00:00:00Z
    #: Async jobs (bulk import, suppression): seconds spent "queued", then profiles
    #: processed per second of the app's clock until "complete".
    job_queued_seconds: float = 0.0
    job_profiles_per_second: float = 100_000.0
    #: Delay before a subscribe/unsubscribe request (202, no job) shows in reads.
    consent_delay_seconds: float = 0.0
    #: Delay before a data-privacy deletion request (202) takes the profile away.
    deletion_delay_seconds: float = 0.0
    #: Fault injection SPEC (see ``emulator/faults.py``), e.g. "429=0.2,503=0.05,seed=7"; None: no faults.
    faults: str | None = None
    #: The account's clock (see ``clock.py``): None = ``now`` plus the app clock's elapsed time;
    #: "real", "fixed:ISO" or "offset:DURATION" (then ``now`` is taken from it at start).
    clock: str | None = None
    #: Refuse revisions Klaviyo has retired (older than two years before the spec's). Off by default:
    #: configs in the seed's shape carry revision_time 2023-02-22, which the emulator still answers.
    strict_revisions: bool = False
    #: Late events: this fraction of events becomes visible only some time after its ``datetime``
    #: (Klaviyo's events are eventually consistent), up to ``arrival_delay`` seconds later.
    late_events: float = 0.0
    arrival_delay: float = 17 * 86400.0
    #: A second shop integration: a WooCommerce "Placed Order" metric next to Shopify's (same name,
    #: two metrics), taking about 40% of the orders.
    second_store: bool = False

    def __post_init__(self) -> None:
        for name in ("profiles", "events", "lists", "segments", "campaigns", "templates", "flows", "latency_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.job_profiles_per_second <= 0 or self.job_queued_seconds < 0 or self.consent_delay_seconds < 0:
            raise ValueError("job_profiles_per_second must be > 0 and delays >= 0")
        if not 0.0 <= self.late_events <= 1.0 or self.arrival_delay < 0:
            raise ValueError("late_events must be a fraction in [0, 1] and arrival_delay >= 0 seconds")
        if self.events and not self.profiles:
            raise ValueError("events need at least one profile")
        if self.clock:
            parse_clock(self.clock)  # a bad SPEC fails here, saying what is expected
        if self.rate_limit_overrides:
            parse_overrides(self.rate_limit_overrides)
        if self.faults:
            parse_faults(self.faults)  # a bad SPEC fails here, naming the item
