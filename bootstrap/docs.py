"""Swagger UI served by the registry itself, so ``/docs`` renders with no internet.

The Swagger UI 5 files come with the ``drf-spectacular-sidecar`` package; we locate its folder
through the import system without importing it (it is a Django app).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.router import Router
from litestar.static_files import create_static_files_router

#: URL prefix under which the Swagger UI files are served.
ASSETS_PATH = "/docs/assets"


def swagger_dist_dir() -> Path:
    """The installed ``swagger-ui-dist`` folder.

    Raises
    ------
    RuntimeError
        If ``drf-spectacular-sidecar`` is not installed.
    """
    spec = importlib.util.find_spec("drf_spectacular_sidecar")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("drf-spectacular-sidecar is not installed; /docs needs its files")
    root = Path(next(iter(spec.submodule_search_locations)))
    folder = root / "static" / "drf_spectacular_sidecar" / "swagger-ui-dist"
    if not (folder / "swagger-ui-bundle.js").is_file():
        raise RuntimeError(f"Swagger UI files not found in {folder}")
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
    favicon = f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>"
    return [
        SwaggerRenderPlugin(
            path="/",
            js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            css_url=f"{ASSETS_PATH}/swagger-ui.css",
            standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
            favicon=favicon,
        ),
        JsonRenderPlugin(path="/openapi.json"),
    ]
