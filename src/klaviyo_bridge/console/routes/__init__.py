"""Routes, one module per page."""

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..web import redirect
from . import authentications, exports, jobs, login, schedules, sources


async def index(request: Request) -> Response:
    return redirect(request, "/sources")


ROUTES = [
    Route("/", index),
    *login.ROUTES,
    *authentications.ROUTES,
    *sources.ROUTES,
    *exports.ROUTES,
    *schedules.ROUTES,
    *jobs.ROUTES,
]
