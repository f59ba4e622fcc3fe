"""Swagger UI served by the registry itself, so ``/docs`` renders with no internet.

Swagger UI's files (5.35.0, Apache-2.0) are part of this package, in ``swagger_ui/`` beside this
module, with their license and notices (see the README there).
"""

from __future__ import annotations

from pathlib import Path

from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.router import Router
from litestar.static_files import create_static_files_router

#: URL prefix under which the Swagger UI files are served.
ASSETS_PATH = "/docs/assets"
#: The files the page loads.
SWAGGER_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "swagger-ui-standalone-preset.js")


def swagger_dist_dir() -> Path:
    """The folder of Swagger UI's files.

    Raises
    ------
    RuntimeError
        If a file is missing (a broken installation).
    """
    folder = Path(__file__).resolve().parent / "swagger_ui"
    missing = [name for name in SWAGGER_FILES if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(f"Swagger UI files missing from {folder}: {', '.join(missing)}")
    return folder


def assets_router() -> Router:
    """A router serving the Swagger UI files at :data:`ASSETS_PATH`."""
    return create_static_files_router(
        path=ASSETS_PATH,
        directories=[swagger_dist_dir()],
        name="swagger-assets",
        include_in_schema=False,
    )


def render_plugins() -> list[SwaggerRenderPlugin | JsonRenderPlugin]:
    """Swagger UI at ``/docs`` (local files only) and the schema at ``/docs/openapi.json``."""
    return [
        SwaggerRenderPlugin(
            path="/",
            js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            css_url=f"{ASSETS_PATH}/swagger-ui.css",
            standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
            favicon="",  # Litestar's default would load an image from the internet
        ),
        JsonRenderPlugin(path="/openapi.json"),
    ]
