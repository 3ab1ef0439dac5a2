"""The connection string every PostgreSQL connection of ours is opened with.

libpq leaves TCP keepalives to the system (first probe after 2 hours on Linux) and retransmits
unacknowledged data for ~15 minutes, so a connection whose server went silent (a failover, a
dropped route: no FIN, no RST) hung a worker, a kept state connection's check or a rate-budget
booking that long. Each connection now probes an idle server after ``keepalives_idle`` seconds and
gives up after ``tcp_user_timeout``; a long query is not cut short by either (the server's kernel
answers the probes while it runs). Settings given in the URL win.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["TCP_SETTINGS", "libpq_url"]

#: libpq connection parameters (https://www.postgresql.org/docs/current/libpq-connect.html):
#: first probe after 30 s idle, then every 10 s, dead after 3 unanswered; unacknowledged data
#: (or probes) for 60 s closes the connection.
TCP_SETTINGS = {
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    "tcp_user_timeout": "60000",
}


def libpq_url(url: str) -> str:
    """``url`` as a ``postgresql://`` URL with ``TCP_SETTINGS`` for the parameters it does not set."""
    url = url.replace("postgres://", "postgresql://", 1)
    parts = urlsplit(url)
    given = parse_qsl(parts.query, keep_blank_values=True)
    names = {name for name, _ in given}
    added = [(name, value) for name, value in TCP_SETTINGS.items() if name not in names]
    if not added:
        return url
    return urlunsplit(parts._replace(query=urlencode([*given, *added])))
