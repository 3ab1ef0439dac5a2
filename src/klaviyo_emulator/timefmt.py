"""Klaviyo's datetime text ('2023-06-01T17:06:39+00:00') and parsing of filter datetimes."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import numpy as np
import numpy.typing as npt

_ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?(?:Z|[+-]\d{2}:?\d{2})?$")


def iso(seconds: int | float | None) -> str | None:
    """Epoch seconds -> '2023-06-01T17:06:39+00:00' (None stays None)."""
    if seconds is None or seconds < 0:
        return None
    return datetime.fromtimestamp(int(seconds), tz=timezone.utc).isoformat()


def iso_array(seconds: npt.ArrayLike) -> np.ndarray:
    """``iso`` for a whole column at once, as ``S25`` bytes (negative = missing -> b'').

    ``datetime.fromtimestamp(...).isoformat()`` per record was a fifth of a page's
    cost; numpy formats the column in one call, with identical text for the
    years (1970-9999) the account spans.
    """
    seconds = np.asarray(seconds, dtype=np.int64)
    text = np.datetime_as_string(np.maximum(seconds, 0).astype("datetime64[s]"), unit="s").astype("S19")
    out = np.strings.add(text, b"+00:00")
    return np.where(seconds >= 0, out, b"") if (seconds < 0).any() else out


def iso_many(seconds: npt.ArrayLike) -> list[str | None]:
    """``iso`` of each value of an epoch-seconds column (negative -> None)."""
    return [t or None for t in iso_array(seconds).astype("U25").tolist()]


def iso_date(seconds: int) -> str:
    return datetime.fromtimestamp(int(seconds), tz=timezone.utc).date().isoformat()


def parse_datetime(text: str) -> float | None:
    """ISO 8601 (Z, offset, fractional seconds, or no offset meaning UTC) -> epoch seconds."""
    if not _ISO_RE.match(text):
        return None
    cleaned = text.replace("Z", "+00:00").replace(" ", "T")
    # Python < 3.11 cannot take 7-9 fractional digits or a '+0000' offset; normalise both.
    m = re.match(r"^(.*?\.\d{1,6})\d*(.*)$", cleaned)
    if m:
        cleaned = m.group(1) + m.group(2)
    cleaned = re.sub(r"([+-]\d{2})(\d{2})$", r"\1:\2", cleaned)
    try:
        dt = datetime.fromisoformat(cleaned)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()
