"""The first-boot web pages, mounted into the agent's aiohttp app by :func:`add_routes`.

Routes:
    ``GET /``: the setup page while the box is not set up, a "this box is set up" page after
        (see :mod:`memu_firstboot.state`).
    ``GET /static/firstboot.css``, ``GET /static/setup.js``: the pages' style sheet and the
        setup form's one script (it puts the browser's time zone in; the form works without).

The setup flow's own pages (form, progress, ready) are answered by the agent, which holds the
claim and the sessions (``memu_agent.setup_pages``), through :func:`respond`.

Pages are plain HTML with one same-origin style sheet and script: nothing fetched from
anywhere else (a box that is not set up may have no internet), and a Content-Security-Policy
that says so. They are Jinja2 templates (``templates/``, Debian's python3-jinja2) extending
one ``layout.html`` (head, style sheet, the box's facts in the footer); autoescaping puts
every value into a page HTML-escaped, and an undefined name is an error, not an empty string.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from memu_common.access import Access, add_route
from memu_firstboot.state import SetupState, setup_state

_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # Not "no-referrer": with it, browsers send "Origin: null" on the page's own form posts,
    # which the agent refuses as coming from elsewhere; "same-origin" still gives other
    # sites nothing.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class PageInfo:
    """What the pages show about the box.

    Attributes:
        device_name: the family-facing name of the box (e.g. "memu").
        version: the OS version (``IMAGE_VERSION`` from os-release).
        hostname: the box's host name on the network.
        state_dir: the directory holding the ``setup-done`` marker.
    """

    device_name: str
    version: str
    hostname: str
    state_dir: Path


@dataclass(frozen=True)
class _Assets:
    pages: jinja2.Environment
    css: bytes
    script: bytes


PAGE_INFO = web.AppKey("memu_firstboot.page_info", PageInfo)
_ASSETS = web.AppKey("memu_firstboot.assets", _Assets)


def page_templates() -> jinja2.Environment:
    """The Jinja2 environment for the package's ``templates/``: HTML autoescaping on, an
    undefined name raises ``jinja2.UndefinedError``."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("memu_firstboot", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def _load_assets() -> _Assets:
    root = resources.files("memu_firstboot")
    return _Assets(pages=page_templates(), css=(root / "static" / "firstboot.css").read_bytes(),
                   script=(root / "static" / "setup.js").read_bytes())


def render(pages: jinja2.Environment, name: str, info: PageInfo, **values: Any) -> str:
    """The page ``templates/<name>`` filled with ``info``'s fields (``device_name``,
    ``version``, ``hostname``) and ``values``, every value HTML-escaped.

    Raises:
        jinja2.TemplateNotFound: no such template.
        jinja2.UndefinedError: the template uses a name it was not given.
    """
    context = {k: v for k, v in asdict(info).items() if k != "state_dir"}
    return pages.get_template(name).render(**context, **values)


def respond(request: web.Request, name: str, *, status: int = 200,
            **values: Any) -> web.Response:
    """An HTML answer: the page ``templates/<name>`` rendered (:func:`render`) with the
    app's page info and ``values``, with the pages' security headers.

    Raises:
        jinja2.TemplateNotFound, jinja2.UndefinedError: as :func:`render`.
    """
    body = render(request.app[_ASSETS].pages, name, request.app[PAGE_INFO], **values)
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8",
                        headers=_SECURITY_HEADERS)


async def index(request: web.Request) -> web.Response:
    """``GET /`` once the box is set up: the "set up" page (the agent shows it at ``/``
    when the chat web client does not answer)."""
    return respond(request, "done.html")


def is_set_up(request: web.Request) -> bool:
    """Whether the box answering ``request`` is set up."""
    return setup_state(request.app[PAGE_INFO].state_dir) is SetupState.DONE


def _static(field: str, content_type: str) -> Callable[[web.Request],
                                                        Awaitable[web.Response]]:
    async def serve(request: web.Request) -> web.Response:
        return web.Response(
            body=getattr(request.app[_ASSETS], field), content_type=content_type,
            charset="utf-8",
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "max-age=3600"})
    serve.__name__ = f"static_{field}"
    return serve


def add_routes(app: web.Application, info: PageInfo, *, root: bool = True) -> None:
    """Mount the first-boot pages on ``app`` (``GET /`` unless ``root`` is false, when the
    caller routes ``/`` itself, and the static files).

    The templates and style sheet are read from the package once, here.

    Raises:
        OSError: the package's templates or style sheet are missing (a broken install).
    """
    app[PAGE_INFO] = info
    app[_ASSETS] = _load_assets()
    if root:
        add_route(app, "GET", "/", index, Access.OPEN, name="firstboot-index")
    add_route(app, "GET", "/static/firstboot.css", _static("css", "text/css"), Access.OPEN,
              name="firstboot-css")
    add_route(app, "GET", "/static/setup.js", _static("script", "text/javascript"),
              Access.OPEN, name="firstboot-js")
