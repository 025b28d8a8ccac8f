"""The status board: ``GET /`` (HTML) and ``GET /board.json`` (the same data), read-only.

With ``REVIVE_BOARD_TOKEN`` set, both ask for the token: ``Authorization: Bearer <token>``,
or ``?token=<token>`` once (or the form of the 401 page, posted), which is then exchanged
for an HttpOnly cookie and a redirect to the bare URL, so the token is not left in the
address bar, the page's refresh or a link someone copies. The cookie holds a digest of the
token, not the token. Every comparison is constant-time. The page runs no script, and says so in its
Content-Security-Policy: a name that slipped past escaping still could not run.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from revive.drill.charts import fmt_clock
from revive.render import render
from revive.web.board_data import BoardSource
from revive.web.board_models import TierDrills
from revive.web.board_svg import rto_trend
from revive.web.verify import read_capped

__all__ = ["COOKIE", "REFRESH_S", "board_router"]

#: Seconds between the page's own reloads.
REFRESH_S = 10
COOKIE = "revive_board"
#: How long a browser stays let in after giving the token once.
COOKIE_MAX_AGE_S = 12 * 3600
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def cookie_value(token: str) -> str:
    """What the cookie holds: a digest of the token, useless anywhere but this board."""
    return hmac.new(token.encode(), b"revive status board cookie", hashlib.sha256).hexdigest()


def _allowed(request: Request, token: str, *, query: bool) -> bool:
    if not token:
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and _same(given.strip(), token):
        return True
    cookie = request.cookies.get(COOKIE)
    if cookie is not None and _same(cookie, cookie_value(token)):
        return True
    given = request.query_params.get("token")
    return query and given is not None and _same(given, token)


def _pct(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.0%}"


def _clock(seconds: float | None) -> str:
    return "never" if seconds is None else fmt_clock(seconds)


def render_board(source: BoardSource) -> str:
    """The page, as ``GET /`` answers it."""
    def trend(row: TierDrills) -> Any:
        return rto_trend(row.tier, row.rto_s, row.target_s)

    return render("board/board.html.j2", b=source.board(), refresh_s=REFRESH_S, pct=_pct,
                  clock=_clock, trend=trend)


def _refused(reason: str) -> HTMLResponse:
    return HTMLResponse(render("board/unauthorized.html.j2", reason=reason), status_code=401,
                        headers={**HEADERS, "WWW-Authenticate": 'Bearer realm="revive"'})


def board_router(source: BoardSource, token: str) -> APIRouter:
    """The board's routes over ``source``; ``token`` empty = open to whoever reaches it."""
    router = APIRouter()

    def let_in(request: Request, given: str) -> Response:
        """The token given once: a cookie and the bare URL, or 401."""
        if not _same(given, token):
            return _refused("That token is not this board's.")
        answer = RedirectResponse("/", status_code=303, headers=HEADERS)
        answer.set_cookie(COOKIE, cookie_value(token), max_age=COOKIE_MAX_AGE_S, path="/",
                          httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return answer

    @router.get("/", response_class=HTMLResponse)
    def board_page(request: Request) -> Response:
        if token and "token" in request.query_params:
            return let_in(request, request.query_params["token"])
        if not _allowed(request, token, query=False):
            return _refused("This board asks for its token (REVIVE_BOARD_TOKEN).")
        return HTMLResponse(render_board(source), headers=HEADERS)

    @router.post("/", response_class=HTMLResponse)
    async def board_login(request: Request) -> Response:
        if not token:
            return RedirectResponse("/", status_code=303, headers=HEADERS)
        body = await read_capped(request, 4096)
        fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
        return let_in(request, (fields.get("token") or [""])[0])

    @router.get("/board.json")
    def board_json(request: Request) -> Response:
        if not _allowed(request, token, query=True):
            return JSONResponse({"error": "this board asks for its token"}, status_code=401,
                                headers={**HEADERS, "WWW-Authenticate": 'Bearer realm="revive"'})
        return JSONResponse(source.board().model_dump(mode="json"), headers=HEADERS)

    return router
