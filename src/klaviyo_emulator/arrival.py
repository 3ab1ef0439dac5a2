"""When a request arrived, for the rate limiter.

Klaviyo's gateway counts a request when it comes in. The emulator is one Python process:
its handlers start only once the event loop has finished earlier requests' work (decoding and
applying a 10,000-profile import takes tens of ms), so a handler's own clock reading lagged
arrival by up to 0.16 s, by different amounts for different requests. Measured that way, two
requests sent 1.1 s apart could count as 0.98 s apart and earn a 429. The HTTP protocol notes
the time it starts parsing each request; the app counts the request at that time.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

SCOPE_KEY = "klaviyo_emulator.arrived"


class ArrivalStampingProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus the monotonic time each request began arriving."""

    #: The clock stamped: the rate limiter's. A test serves a subclass with a fake one (``serving(http=)``).
    clock = staticmethod(time.monotonic)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # uvicorn types the scope as a TypedDict without our key; ASGI lets a server add extension keys.
        self.scope[SCOPE_KEY] = self.clock()  # type: ignore[literal-required]


def arrived_at(scope: Mapping[str, object]) -> float | None:
    arrived = scope.get(SCOPE_KEY)
    return arrived if isinstance(arrived, float) else None
