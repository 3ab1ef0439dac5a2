"""The web console: the seed's console flows (authentications, import sources, exports,
schedules, job history) served by the project itself, on top of the same library the CLI uses.

``create_app(ConsoleConfig(...))`` builds the Starlette app; ``serve`` runs it with uvicorn;
``check_bind`` refuses a non-loopback bind without a token. Pages live in ``routes/`` (one
module per page), templates in ``templates/`` and CSS/JS in ``static/`` (package data; no
build step, no CDN).
"""

from .app import ConsoleConfig, check_bind
from .server import create_app, serve

__all__ = ["ConsoleConfig", "check_bind", "create_app", "serve"]
