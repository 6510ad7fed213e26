"""The staff console at /console/: the built Vue app (frontend/, `make console`) from the package.

The console is static files and nothing else: every figure it shows and every change it makes
goes through the admin API with the staff member's own bearer token, so it can do nothing that
person's role and branch may not. Hashed assets are cached for a year (a new build has new
names); index.html is never cached, so a new build is picked up at the next load. Any other path
under /console/ is a route of the app itself and answers index.html.
"""

from __future__ import annotations

import mimetypes
import re
from pathlib import Path

from aiohttp import web

from quanyi.core.schemas import endpoint

CONSOLE_DIR = Path(__file__).parent / "static" / "console"
ASSET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
# Element Plus and ECharts set inline styles; scripts come only from the console's own files.
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}

routes = web.RouteTableDef()


def _index() -> web.StreamResponse:
    index = CONSOLE_DIR / "index.html"
    if not index.is_file():  # a checkout whose console was never built
        raise web.HTTPNotFound(text="console not built: run `make console`")
    return web.FileResponse(
        index,
        headers={
            "Content-Type": "text/html; charset=utf-8",
            "Cache-Control": "no-cache",
            "Content-Security-Policy": POLICY,
            "X-Content-Type-Options": "nosniff",
        },
    )


@routes.get("/console")
@endpoint("The staff console", auth="none", responses={302: None}, documented=False)
async def console_root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/console/")


def built_asset(built: Path, name: str) -> web.StreamResponse:
    """One hashed file of a built app (`built`/assets/`name`), cached for a year; the console
    and the customer H5 page serve theirs this one way."""
    path = built / "assets" / name
    if not ASSET_NAME.match(name) or not path.is_file():
        raise web.HTTPNotFound()
    kind = TYPES.get(path.suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    return web.FileResponse(
        path,
        headers={
            "Content-Type": kind,
            "Cache-Control": "public, max-age=31536000, immutable",
            "X-Content-Type-Options": "nosniff",
        },
    )


@routes.get("/console/assets/{name}")
@endpoint("The staff console's built files", auth="none", responses={200: None}, documented=False)
async def console_asset(request: web.Request) -> web.StreamResponse:
    return built_asset(CONSOLE_DIR, request.match_info["name"])


@routes.get("/console/{route:.*}")
@endpoint(
    "The staff console (its own routes)", auth="none", responses={200: None}, documented=False
)
async def console_page(request: web.Request) -> web.StreamResponse:
    return _index()
