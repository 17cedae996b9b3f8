"""The console's routes under `/ui`: thin, as the API's are. Each checks the session (and on a
POST its CSRF token and role), then hands over to `Console` on `app.state.console`: a page is
built in the console's own process (`builder.py`) or taken from its cache, a form post is done on
a worker thread and clears the cache, so the poster sees its change at once.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import parse_qsl, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from smallfleet.errors import ConfigError, DataError
from smallfleet.serve.console.access import COOKIE, SIGNIN_COOKIE, AccessError, ConsoleAccess, Session
from smallfleet.serve.console.builder import Console

STATIC = Path(__file__).parent / "static"
ASSETS = {"console.css": "text/css", "console.js": "text/javascript"}
MAX_FORM_BYTES = 200_000
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

router = APIRouter(prefix="/ui")


def _parts(request: Request) -> tuple[Console, ConsoleAccess]:
    return request.app.state.console, request.app.state.console_access


def _html(body: str, status: int = 200, cookies: list[tuple[str, str | None, Request]] | None = None) -> HTMLResponse:
    response = HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)
    for name, value, request in cookies or []:
        _cookie(response, name, value, request)
    return response


def _cookie(response: Response, name: str, value: str | None, request: Request) -> None:
    if value is None:
        response.delete_cookie(name, path="/ui")
        return
    response.set_cookie(name, value, path="/ui", httponly=True, samesite="strict", secure=request.url.scheme == "https")


def _redirect(url: str, cookies: list[tuple[str, str | None, Request]] | None = None) -> RedirectResponse:
    response = RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)
    for name, value, request in cookies or []:
        _cookie(response, name, value, request)
    return response


def _error(console: Console, status: int, message: str, session: Session | None = None) -> HTMLResponse:
    body = console.pages.render(console.view(), "error.html.j2", status=status, message=message, session=session)
    return _html(body, status)


async def _session(request: Request) -> tuple[Session | None, str | None]:
    """The caller's session and, when one was just opened (open console), its new token for the cookie."""
    _, access = _parts(request)
    session = await run_in_threadpool(access.session, request.cookies.get(COOKIE))  # sessions are in the database
    if session is None:
        opened = await run_in_threadpool(access.open_session)
        if opened is not None:
            return opened[1], opened[0]
    return session, None


async def _page(request: Request, template: str, page: str, *args, **kwargs) -> Response:
    """A page for a signed-in caller, at a person's pace: `ConsolePages.<page>(fleet, *args)` rendered with
    `template`, from the session's cache when it built the same URL a moment ago."""
    console, _ = _parts(request)
    try:
        session, new_token = await _session(request)
    except AccessError as exc:
        return _error(console, exc.status, str(exc))
    if session is None:
        return _redirect(f"/ui/signin?next={quote(request.url.path)}")
    token = "" if new_token else request.cookies.get(COOKIE, "")
    await console.pace(token)  # callers without a session (open console) share one pace
    key = (token, str(request.url))  # the page holds the session's CSRF token
    cached = None if new_token else console.cache.get(key)
    if cached is not None:
        return _html(*cached)
    context = {"session": session, "notice": request.query_params.get("notice"), **kwargs}
    body, status = await console.build(page, args, template, context)
    if not new_token:
        console.cache.put(key, body, status)
    return _html(body, status, cookies=[(COOKIE, new_token, request)] if new_token else None)


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise AccessError(413, f"form over {MAX_FORM_BYTES} bytes")
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


async def _post(request: Request, action: str | None, do) -> Response:
    """A form post: session, CSRF token and role checked, then `do(session, form)` on a worker thread."""
    console, access = _parts(request)
    session = None
    try:
        session = await run_in_threadpool(access.session, request.cookies.get(COOKIE))
        if session is None:
            raise AccessError(401, "sign in first")
        form = await _form(request)
        access.check_csrf(session, form.get("csrf"))
        if action:
            access.require(session, action)
        return await run_in_threadpool(do, session, form)
    except AccessError as exc:
        return _error(console, exc.status, str(exc), session)


@router.get("/static/{name}")
async def static(name: str):
    if name not in ASSETS:
        return Response("not found", status_code=404)
    return Response((STATIC / name).read_bytes(), media_type=ASSETS[name], headers={"Cache-Control": "max-age=300"})


@router.get("/signin")
async def signin_form(request: Request):
    console, access = _parts(request)
    try:
        session, new_token = await _session(request)
    except AccessError as exc:
        return _error(console, exc.status, str(exc))
    if session is not None:
        return _redirect("/ui", cookies=[(COOKIE, new_token, request)] if new_token else None)
    console.warm()  # the page they go to next is built in the builder process
    token = request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(24)
    body = console.pages.render(console.view(), "signin.html.j2", session=None, csrf=token,
                                next=request.query_params.get("next", "/ui"), message=None)  # fmt: skip
    return _html(body, cookies=[(SIGNIN_COOKIE, token, request)])


@router.post("/signin")
async def signin(request: Request):
    console, access = _parts(request)
    form = await _form(request)
    sent, held = form.get("csrf"), request.cookies.get(SIGNIN_COOKIE)
    target = form.get("next") or "/ui"
    target = target if target.startswith("/ui") and not target.startswith("//") else "/ui"
    try:
        if not held or sent != held:
            raise AccessError(403, "the form's security token is missing or stale: reload the page and try again")
        token, _ = await run_in_threadpool(access.sign_in, form.get("key", ""))
    except AccessError as exc:
        body = console.pages.render(console.view(), "signin.html.j2", session=None, csrf=held or "", next=target,
                                    message=str(exc))  # fmt: skip
        return _html(body, exc.status)
    return _redirect(target, cookies=[(COOKIE, token, request), (SIGNIN_COOKIE, None, request)])


@router.post("/signout")
async def signout(request: Request):
    def do(session: Session, form: dict) -> Response:
        request.app.state.console_access.sign_out(request.cookies.get(COOKIE))
        return _redirect("/ui/signin", cookies=[(COOKIE, None, request)])

    return await _post(request, None, do)


@router.get("")
async def overview(request: Request):
    return await _page(request, "overview.html.j2", "overview")


@router.get("/tasks")
async def tasks(request: Request):
    return await _page(request, "tasks.html.j2", "tasks")


@router.get("/reviews")
async def reviews(request: Request):
    return await _page(request, "reviews.html.j2", "reviews", request.query_params.get("task") or None, error=None)


@router.post("/reviews/{item_id}")
async def answer(request: Request, item_id: int):
    console: Console = request.app.state.console

    def do(session: Session, form: dict) -> Response:
        fleet, pages = console.view(), console.pages
        try:
            item = pages.answer(fleet, item_id, form, session.name)
        except (ConfigError, DataError) as exc:
            body = pages.render(fleet, "reviews.html.j2", session=session, notice=None,
                                error=f"review #{item_id}: {exc}", **pages.reviews(fleet, form.get("task") or None))  # fmt: skip
            return _html(body, 400)
        console.cache.clear()  # the queue, the overview and the request's detail change: show it at once
        back = f"/ui/reviews?task={quote(form['task'])}&" if form.get("task") else "/ui/reviews?"
        return _redirect(back + "notice=" + quote(f"review #{item_id}: recorded {item['answer']}"))

    return await _post(request, "review", do)


@router.get("/requests")
async def requests(request: Request):
    q = request.query_params
    escalated = {"yes": True, "no": False}.get(q.get("escalated", ""))
    before = int(q["before"]) if q.get("before", "").isdigit() else None
    return await _page(request, "requests.html.j2", "requests", q.get("task") or None, q.get("tier") or None,
                       escalated, q.get("errors") == "yes", before)  # fmt: skip


@router.get("/requests/{request_id}")
async def request_detail(request: Request, request_id: str):
    return await _page(request, "request.html.j2", "request", request_id)


@router.get("/versions")
async def versions(request: Request):
    return await _page(request, "versions.html.j2", "versions")


@router.post("/versions/{action}")
async def change_version(request: Request, action: str):
    console: Console = request.app.state.console
    if action not in ("promote", "rollback"):
        return _error(console, 404, f"no version action {action!r}")

    def do(session: Session, form: dict) -> Response:
        task, version = form.get("task", ""), form.get("version", "")
        fleet, pages = console.view(), console.pages
        if form.get("confirmed") != "yes":  # a confirmation page first: works with or without script
            body = pages.render(fleet, "confirm.html.j2", session=session, notice=None, action=action, task=task,
                                version=version)  # fmt: skip
            return _html(body)
        try:
            message = pages.promote(fleet, task, version) if action == "promote" else pages.rollback(fleet, task)
        except ConfigError as exc:
            return _error(console, 400, str(exc), session)
        console.cache.clear()
        return _redirect("/ui/versions?notice=" + quote(message))

    return await _post(request, "promote", do)
