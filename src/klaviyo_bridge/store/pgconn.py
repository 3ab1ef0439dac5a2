"""The connection string every PostgreSQL connection of ours is opened with.

libpq leaves TCP keepalives to the system (on Linux the first probe comes after 2 hours), so a
connection whose server went silent (a failover, a dropped route: no FIN, no RST) hung a worker
waiting for an answer, a kept state connection's check or a rate-budget booking that long. Each
connection now probes an idle server after ``keepalives_idle`` seconds and is closed after
``keepalives_count`` unanswered probes. A long query is not cut short (the server's kernel answers
the probes while it runs), nor a large write to a server that is slow to read: no
``tcp_user_timeout`` is set, which would also end a connection whose server keeps its receive
window shut that long. Settings given in the URL win; ``keepalives=0`` there turns them all off.
"""

from __future__ import annotations

from urllib.parse import unquote

__all__ = ["KEEPALIVES", "libpq_url"]

#: libpq connection parameters (https://www.postgresql.org/docs/current/libpq-connect.html):
#: first probe after 30 s idle, then every 10 s, closed after 3 unanswered (about a minute).
KEEPALIVES = {
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}


def libpq_url(url: str) -> str:
    """``url`` as a ``postgresql://`` URL with ``KEEPALIVES`` for the parameters it does not set.

    The URL's own text is kept as it is (its query values are not decoded and encoded again, a
    URL without a host keeps its ``///``); the parameters are appended."""
    url = url.replace("postgres://", "postgresql://", 1)
    query = url.partition("?")[2]
    given = {unquote(pair.partition("=")[0]): unquote(pair.partition("=")[2]) for pair in query.split("&") if pair}
    if given.get("keepalives", "").strip() == "0":
        return url  # the user turned keepalives off
    added = "&".join(f"{name}={value}" for name, value in KEEPALIVES.items() if name not in given)
    if not added:
        return url
    return f"{url}&{added}" if query else f"{url.rstrip('?')}?{added}"
