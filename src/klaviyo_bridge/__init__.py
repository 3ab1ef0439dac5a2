"""klaviyo-bridge: two-way data integration between your data and Klaviyo."""

import sys as _sys

__version__ = "0.1.0"

# httpx imports its own command-line client (click, rich, pygments: ~100 modules, ~6 MB of the
# process's peak) whenever those are installed, which they are here. The bridge never runs it;
# loaded after this, ``httpx.main`` is httpx's own "install httpx[cli]" message instead.
if "httpx" not in _sys.modules:
    _sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
