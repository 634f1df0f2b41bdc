"""The dashboard's pages and assets, and the browser's way in when a token is required.

Every page is the same ``static/index.html``; its script (``static/app.js``) routes by path,
so a link to a run or a comparison can be bookmarked and shared. Everything the pages load
ships inside the package under ``static/`` (uPlot vendored by ``make ui``, see
``ui/package.json``): no CDN, no network, ever (air-gapped clusters are who this is for).

A browser cannot send the ``Authorization`` header when it follows a link, so a server that
requires a token takes it once as ``?token=`` on any page, answers with a cookie holding it
(HttpOnly, SameSite=Strict: no script and no other site can read or send it) and redirects to
the same address without the token, which then stays out of the history and the address bar.
"""

from __future__ import annotations

import hmac
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

STATIC = Path(__file__).with_name("static")
COOKIE = "localrun_token"
# The paths app.js draws; anything else under / that is not /api or /static is a 404.
PAGES = ("/", "/compare", "/runs/{project}/{id}")


def routes() -> list[BaseRoute]:
    """The page routes and the asset mount."""

    async def page(request: object) -> Response:
        # no-cache: a new localrun version's page must not pair with old cached scripts
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    found: list[BaseRoute] = [Route(path, page, methods=["GET"]) for path in PAGES]
    found.append(Mount("/static", app=StaticFiles(directory=STATIC), name="static"))
    return found


def cookie_token(header: bytes) -> bytes | None:
    """The token in a ``Cookie`` header's :data:`COOKIE`, if any."""
    try:
        jar = SimpleCookie(header.decode("latin-1"))
    except CookieError:
        return None
    morsel = jar.get(COOKIE)
    return morsel.value.encode() if morsel is not None else None


class TokenLogin:
    """``GET <page>?token=T`` with the right token: set the cookie, redirect without ``token``.

    A first visit carries neither header nor cookie, so this middleware wraps
    :class:`~.app.TokenAuth` (added after it: Starlette's last ``add_middleware`` is the
    outermost) and answers before it. A wrong token falls through to ``TokenAuth``'s 401.
    """

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is not None and scope["type"] == "http" and scope["method"] == "GET":
            query = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
            given = [v for k, v in query if k == "token"]
            if given and hmac.compare_digest(given[-1].encode(), self.token):
                rest = urlencode([(k, v) for k, v in query if k != "token"])
                target = scope["path"] + (f"?{rest}" if rest else "")
                response = RedirectResponse(target, status_code=303)
                response.set_cookie(
                    COOKIE, self.token.decode(), httponly=True, samesite="strict", path="/"
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
