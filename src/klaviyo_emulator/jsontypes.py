"""Types at the emulator's JSON boundary.

Request bodies, JSON:API documents and resource attributes are free-form JSON: their shape is the
spec's (checked by ``bodies.validate_body`` on the way in and by the contract tests on the way out),
not something the type checker can follow through every handler.
"""

from __future__ import annotations

from typing import Any, TypeAlias

#: A JSON object: decoded with orjson, or to be encoded with it.
JSON: TypeAlias = dict[str, Any]
