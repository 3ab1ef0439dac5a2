"""The emulator's command line: ``klaviyo-emulator`` (also ``klaviyo-bridge emulator``)."""

from __future__ import annotations

import click


@click.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8765, show_default=True, type=int, help="TCP port (0 picks a free one).")
@click.option("--seed", default=1, show_default=True, type=int, help="Same seed, same account, same bytes.")
@click.option("--profiles", default=1000, show_default=True, type=click.IntRange(0), help="Number of profiles.")
@click.option("--events", default=10000, show_default=True, type=click.IntRange(0), help="Number of events.")
@click.option("--lists", default=5, show_default=True, type=click.IntRange(0), help="Number of lists.")
@click.option("--latency-ms", default=0, show_default=True, type=click.IntRange(0), help="Added latency per request.")
@click.option("--no-rate-limits", is_flag=True, help="Do not answer 429 when the spec's rate limits are exceeded.")
@click.option(
    "--rate-limits",
    "rate_limit_overrides",
    default=None,
    metavar="SPEC",
    help='The account\'s own limits instead of the published ones, e.g. "get_profiles=5/50" (5 a second, '
    '50 a minute), "get_profiles:predictive_analytics=2/20" (one tier) or "*=0.1" (a tenth of every limit).',
)
@click.option(
    "--faults",
    default=None,
    metavar="SPEC",
    help='Inject faults, e.g. "429=0.2,500=0.05,503=0.05,reset=0.02,slow=0.05:30s,truncate=0.01,seed=7" '
    'or "storm=get_events:503:10s" (see emulator/faults.py).',
)
@click.option(
    "--clock",
    "clock",
    default="real",
    show_default=True,
    metavar="SPEC",
    help="The account's clock: real (data over the two years before now; writes stamped with the "
    "real time), fixed:ISO (e.g. fixed:2026-01-01T00:00:00Z, frozen: same seed, same bytes) "
    "or offset:DURATION (real time shifted, e.g. offset:-30d, offset:+2h).",
)
@click.option(
    "--strict-revisions",
    is_flag=True,
    help="Refuse revisions Klaviyo has retired (older than two years before the spec's revision).",
)
@click.option(
    "--api-key",
    envvar="KLAVIYO_EMULATOR_API_KEY",
    default=None,
    help="Key the emulator accepts (env KLAVIYO_EMULATOR_API_KEY; default: the emulator's demo key).",
)
def emulator_command(
    host: str,
    port: int,
    seed: int,
    profiles: int,
    events: int,
    lists: int,
    latency_ms: int,
    no_rate_limits: bool,
    api_key: str | None,
    faults: str | None = None,
    clock: str = "real",
    strict_revisions: bool = False,
    rate_limit_overrides: str | None = None,
) -> None:
    """Run the Klaviyo emulator in the foreground (Ctrl-C stops it).

    It serves the read endpoints of Klaviyo's API (revision from the official
    spec) over a deterministic synthetic account, with the spec's per-endpoint
    rate limits. Point the client at it with KLAVIYO_BASE_URL=http://HOST:PORT.
    """
    # Imported here, not at the top: the emulator's modules load numpy, starlette and uvicorn, a cost
    # every other `klaviyo-bridge` command (this one is part of that CLI) would pay at start.
    from .app import SERVED_REVISION_HEADER, revision_window
    from .clock import parse_clock
    from .faults import parse_faults
    from .limits import parse_overrides
    from .server import serve
    from .settings import DEFAULT_API_KEY, EmulatorSettings

    if faults:
        try:
            parse_faults(faults)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--faults") from None
    if rate_limit_overrides:
        try:
            parse_overrides(rate_limit_overrides)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--rate-limits") from None
    try:
        clock_spec = parse_clock(clock)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--clock") from None
    settings = EmulatorSettings(
        clock=clock,
        strict_revisions=strict_revisions,
        faults=faults or None,
        seed=seed,
        profiles=profiles,
        events=events,
        lists=lists,
        latency_ms=latency_ms,
        rate_limits=not no_rate_limits,
        rate_limit_overrides=rate_limit_overrides or None,
        api_key=api_key or DEFAULT_API_KEY,
    )
    oldest, served = revision_window()
    accepted = f"{oldest.isoformat()} to today" if strict_revisions else "up to today"
    accepted += (
        f"; a later one than {served.isoformat()} gets {served.isoformat()}'s shapes and the header {SERVED_REVISION_HEADER}"
    )
    click.echo(
        f"Klaviyo emulator on http://{host}:{port} (seed {seed}, {profiles} profiles, {events} events, "
        f"clock {clock_spec.describe()}; serves revision {served.isoformat()}'s shapes, accepts revisions {accepted})"
        + (f", faults {faults}" if faults else ""),
        err=True,
    )
    serve(settings, host=host, port=port)


def main() -> None:
    emulator_command(prog_name="klaviyo-emulator")
