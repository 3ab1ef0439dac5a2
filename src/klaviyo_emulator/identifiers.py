"""The profile identifier rules every write path applies (imports, consent, profile upserts, events)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

EMAIL_RE = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
PHONE_RE = re.compile(r"^\+[1-9]\d{6,14}$")


def identifier_problems(attrs: Mapping[str, Any], base: str, need_identifier: bool = True) -> list[tuple[str, str]]:
    """(pointer, message) for an invalid email or phone number, and for no identifier at all."""
    out = []
    email, phone = attrs.get("email"), attrs.get("phone_number")
    if email is not None and not EMAIL_RE.match(email):
        out.append((f"{base}/email", f"Invalid email address {email!r}."))
    if phone is not None and not PHONE_RE.match(phone):
        out.append((f"{base}/phone_number", f"Invalid phone number {phone!r}: expected E.164, e.g. +15005550006."))
    if need_identifier and not (email or phone or attrs.get("external_id") or attrs.get("id")):
        out.append((base, "A profile needs at least one identifier: email, phone_number, external_id or id."))
    return out
