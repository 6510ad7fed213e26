"""The customer H5 page at /h5/: the built Vue app (frontend/h5/, `npm run build:h5`) from the
package, its hashed files served as the staff console's are (quanyi/web/console.py
built_asset).

The page is static files and nothing else: it reads and claims through /h5/api/ with the token
of its session (quanyi/issuance/h5_api.py), so it can show nothing but that customer's data.
It may not be framed (a claim button under someone else's page is a click away from a claim),
sends no Referer (the first URL carries the token), and loads scripts and styles only from its
own files."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from quanyi.core.schemas import endpoint
from quanyi.web.console import built_asset

H5_DIR = Path(__file__).parent / "static" / "h5"
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

routes = web.RouteTableDef()


@routes.get("/h5")
@endpoint("The customer H5 page", auth="none", responses={302: None}, documented=False)
async def h5_root(request: web.Request) -> web.StreamResponse:
    # The query is the session's token: kept across the redirect.
    query = request.rel_url.raw_query_string
    raise web.HTTPFound(f"/h5/?{query}" if query else "/h5/")


@routes.get("/h5/")
@endpoint("The customer H5 page", auth="none", responses={200: None}, documented=False)
async def h5_page(request: web.Request) -> web.StreamResponse:
    index = H5_DIR / "index.html"
    if not index.is_file():  # a checkout whose page was never built
        raise web.HTTPNotFound(text="H5 page not built: run `npm run build:h5` in frontend/")
    return web.FileResponse(
        index,
        headers={
            "Content-Type": "text/html; charset=utf-8",
            "Cache-Control": "no-store",
            "Content-Security-Policy": POLICY,
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        },
    )


@routes.get("/h5/assets/{name}")
@endpoint(
    "The customer H5 page's built files", auth="none", responses={200: None}, documented=False
)
async def h5_asset(request: web.Request) -> web.StreamResponse:
    return built_asset(H5_DIR, request.match_info["name"])
