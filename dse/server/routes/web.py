"""The web page (``/``, its favicon and ``/static/*``) and the API docs (``/docs``), all served from
this package: nothing is fetched from a CDN, so both work offline.

``/docs`` is Swagger UI when a Swagger UI 5 bundle is installed (the ``swagger_ui_bundle`` module of
the ``swagger-ui-bundle-v2`` package; Swagger UI 4 cannot read OpenAPI 3.1), else a small built-in
reference page (``static/docs.html``) rendered from ``/openapi.json``.
"""

import logging
import re
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
NO_CACHE = {"Cache-Control": "no-cache"}
PAGE_METHODS = ["GET", "HEAD"]  # curl -I, link checkers


def swagger_ui_dir() -> Path | None:
    """The directory of an installed Swagger UI >= 5 bundle, or ``None``."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    path = Path(str(swagger_ui_path))
    version = re.search(r"(\d+)\.\d+", path.name)
    if version is None or int(version.group(1)) < 5 or not (path / "swagger-ui-bundle.js").is_file():
        logger.info("the installed Swagger UI (%s) cannot read OpenAPI 3.1; /docs is the built-in page", path.name)
        return None
    return path


def install(app: FastAPI, *, title: str, swagger_dir: Path | None = None) -> None:
    """Add the web page, favicon, static files and ``/docs`` to ``app`` (none in the OpenAPI document).

    ``swagger_dir``: the Swagger UI bundle to serve (default: :func:`swagger_ui_dir`)."""
    swagger_dir = swagger_dir if swagger_dir is not None else swagger_ui_dir()

    @app.api_route("/", methods=PAGE_METHODS, include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=NO_CACHE)

    @app.api_route("/favicon.ico", methods=PAGE_METHODS, include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(STATIC_DIR / "favicon.ico", headers={"Cache-Control": "public, max-age=86400"})

    if swagger_dir is not None:
        app.mount("/docs/assets", StaticFiles(directory=swagger_dir), name="swagger-ui")

        @app.api_route("/docs", methods=PAGE_METHODS, include_in_schema=False)
        async def swagger_docs() -> HTMLResponse:
            return get_swagger_ui_html(
                openapi_url=app.openapi_url or "/openapi.json",
                title=f"{title} — API",
                swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                swagger_css_url="/docs/assets/swagger-ui.css",
                swagger_favicon_url="/favicon.ico",
                oauth2_redirect_url=None,
                swagger_ui_parameters={"validatorUrl": None},
            )

    else:

        @app.api_route("/docs", methods=PAGE_METHODS, include_in_schema=False)
        async def builtin_docs() -> Response:
            return FileResponse(STATIC_DIR / "docs.html", headers=NO_CACHE)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
