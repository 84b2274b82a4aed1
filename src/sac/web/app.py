"""The FastAPI app of `sac serve`: ``create_app(settings) -> FastAPI``.

Routes are thin: parse the request, call one function of the session store, the :class:`Editor` or the export
module, serialise. JSON errors are ``{"detail": message}``: 400 bad input (the Editor's messages), 401 missing token,
404 unknown item/format, 409 no image yet / segmentation still running, 410 session evicted, 413 too large,
415 not an image, 422 malformed request.

=========================  ================================================================================
``GET /``                  the page (``static/index.html``; ``app.js``, ``style.css`` under ``/static/``)
``GET /api/info``          model, limits, whether a library / saving is available
``GET /api/library``       ``--data-dir`` images: ``{"items": [{"id", "name"}]}``
``POST /api/open/upload``  raw file bytes as the body (``?name=file.png``) -> starts the segmentation
``POST /api/open/library`` ``{"id"}`` -> starts the segmentation
``GET /api/state``         status (empty/queued/running/ready/failed), tiles done/total, size, nucleus count
``GET /api/image``         the decoded image as PNG (what the model saw)
``GET /api/contours``      every nucleus polygon ``{"version", "n_nuclei", "nuclei": {id: {ring, area, bbox}}}``
``POST /api/<op>``         add / remove ``{x, y}``; box ``{x0, y0, x1, y1}``; delete ``{id}``; merge ``{ids}``;
                           split / refine ``{id, points}``; undo; redo -> the Edit and the outline delta
``GET /api/export/<fmt>``  mask | labels | overlay | csv | geojson (the files of `sac segment`)
``POST /api/save-example`` ``{"split"}`` -> image + labels into ``<train_dir>/<split>/images|labels``
=========================  ================================================================================
"""

from __future__ import annotations

import hmac
import io
import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from sac.errors import SACError
from sac.inference.api import load_model
from sac.inference.config import InferenceConfig
from sac.inference.editor import Editor
from sac.inference.reader import ArraySource
from sac.inference.writers import FORMATS
from sac.web.errors import NoImage, TooLarge
from sac.web.exports import export_bytes, save_example
from sac.web.images import Library, decode_upload, safe_name
from sac.web.sessions import Session, SessionStore, apply_edit
from sac.web.settings import (
    MAX_PIXELS,
    SESSION_COOKIE,
    SESSION_HEADER,
    SPLIT_PATTERN,
    TOKEN_COOKIE,
    TOKEN_HEADER,
    ServeSettings,
)

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("sac.web")


class Point(BaseModel):
    x: float
    y: float


class Box(BaseModel):
    x0: float
    y0: float
    x1: float
    y1: float


class Target(BaseModel):
    id: int


class Targets(BaseModel):
    ids: list[int]


class TargetPoints(BaseModel):
    id: int
    points: list[list[float]]


class LibraryChoice(BaseModel):
    id: str


class Split(BaseModel):
    split: str = "train"


def inference_config(settings: ServeSettings) -> InferenceConfig:
    """The library's defaults, with the engine chosen on the command line when one was."""
    return InferenceConfig(engine=settings.engine) if settings.engine else InferenceConfig()


def create_app(settings: ServeSettings, model=None) -> FastAPI:
    """The app for ``settings`` (validated here). ``model``: an already loaded
    :class:`~sac.inference.api.SACModel` (else ``settings.model`` is loaded)."""
    settings.validate()
    model = model or load_model(settings.model, device=settings.device, sam_checkpoint=settings.sam_checkpoint)
    cfg = inference_config(settings).validate()
    segmenter = model.segmenter(cfg)  # one for all sessions: the engine is built (and compiled) once
    if hasattr(model.runnable, "build"):  # clicks run the torch interactive head: build it now, not at the first click
        model.runnable.build()

    def make_editor(image, on_tile):
        return Editor.from_segmenter(segmenter, image, on_tile=on_tile)

    def count_tiles(image) -> int:
        return len(segmenter.tiles_for(*image.shape[:2], segmenter.scale_for(ArraySource(image))))

    store = SessionStore(make_editor, count_tiles, settings.memory_bytes, settings.workers,
                         shared=(segmenter, getattr(segmenter, "engine", None), model))
    library = Library(settings.data_dir, exclude=settings.train_dir)

    @asynccontextmanager
    async def lifespan(app):
        yield
        store.close()

    app = FastAPI(title="sac serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store, app.state.settings, app.state.model = store, settings, model

    @app.exception_handler(SACError)
    async def user_error(request: Request, exc: SACError):
        return JSONResponse({"detail": str(exc)}, status_code=getattr(exc, "status", 400))

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception):
        # A bug: the session stays usable, the page shows one line, the server log keeps the traceback.
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        """Every request carries the token when one is set (header, cookie, or ``?token=`` in the first URL)."""
        token = settings.token
        if token:
            query = request.query_params.get("token")
            given = request.headers.get(TOKEN_HEADER) or request.cookies.get(TOKEN_COOKIE) or query or ""
            if not hmac.compare_digest(given.encode(), token.encode()):
                return JSONResponse({"detail": "missing or wrong token: open the URL `sac serve` printed "
                                               "(it ends with ?token=...)"}, status_code=401)
        response = await call_next(request)
        if token and request.query_params.get("token") == token:
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response

    def session_id(request: Request) -> str | None:
        return request.headers.get(SESSION_HEADER) or request.cookies.get(SESSION_COOKIE)

    def session_of(request: Request, response: Response | None = None):
        """The caller's session; with ``response`` a new one is created (and its cookie set) when needed."""
        sid = session_id(request)
        session = store.get(sid, create=response is not None)
        if response is not None and session.id != sid:
            response.set_cookie(SESSION_COOKIE, session.id, httponly=True, samesite="strict")
            response.headers[SESSION_HEADER] = session.id
        return session

    # ------------------------------------------------------------------ page and metadata
    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/info")
    def info():
        return {
            "model": {k: v for k, v in model.info.items() if k != "folder"}, "device": model.device,
            "engine": getattr(getattr(segmenter, "engine", None), "name", "torch"),
            "max_upload_mb": settings.max_upload_mb, "max_pixels": MAX_PIXELS, "library": settings.data_dir is not None,
            "can_save": settings.train_dir is not None, "split_pattern": SPLIT_PATTERN.pattern, "formats": FORMATS,
        }

    @app.get("/api/library")
    def library_items():
        return {"items": [{"id": i.id, "name": i.name} for i in library.items().values()]}

    # ------------------------------------------------------------------ opening an image
    @app.post("/api/open/upload")
    async def open_upload(request: Request, response: Response, name: str = "upload"):
        limit = settings.max_upload_bytes
        declared = request.headers.get("content-length", "")
        too_big = TooLarge(f"upload larger than {settings.max_upload_mb:g} MB (`sac serve --max-upload-mb`)")
        if declared.isdigit() and int(declared) > limit:
            raise too_big
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_big
        stem = safe_name(name)
        image = await run_in_threadpool(decode_upload, bytes(body), stem)
        return await run_in_threadpool(store.open, session_of(request, response), stem, image)

    @app.post("/api/open/library")
    def open_library(choice: LibraryChoice, request: Request, response: Response):
        name, image = library.read(choice.id)
        return store.open(session_of(request, response), safe_name(name), image)

    @app.get("/api/state")
    def state(request: Request):
        try:
            session = session_of(request)
        except NoImage:  # a new browser: nothing open yet (an evicted session still gets its 410)
            return Session("-").state()
        with session.lock:
            return session.state()

    @app.get("/api/image")
    def image(request: Request):
        from PIL import Image

        session = session_of(request)
        with session.lock:
            pixels = session.image
        if pixels is None:
            raise SACError("no image open in this session")
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)  # fast; the page decodes it once
        return Response(buf.getvalue(), media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/api/contours")
    def contours(request: Request):
        session = session_of(request)
        with session.lock:
            session.ready_editor()
            payload = {"n_nuclei": session.n_nuclei, **session.contours.payload()}
        # Straight to JSON: FastAPI's encoder would walk each of the ~10^6 coordinates of a large image first.
        return JSONResponse(payload)

    # ------------------------------------------------------------------ edits: one Editor call each
    @app.post("/api/add")
    def add(p: Point, request: Request):
        return apply_edit(session_of(request), "add", p.x, p.y)

    @app.post("/api/remove")
    def remove(p: Point, request: Request):
        return apply_edit(session_of(request), "remove", p.x, p.y)

    @app.post("/api/box")
    def box(b: Box, request: Request):
        return apply_edit(session_of(request), "box", b.x0, b.y0, b.x1, b.y1)

    @app.post("/api/refine")
    def refine(t: TargetPoints, request: Request):
        return apply_edit(session_of(request), "refine", t.id, t.points)

    @app.post("/api/delete")
    def delete(t: Target, request: Request):
        return apply_edit(session_of(request), "delete", t.id)

    @app.post("/api/merge")
    def merge(t: Targets, request: Request):
        return apply_edit(session_of(request), "merge", t.ids)

    @app.post("/api/split")
    def split(t: TargetPoints, request: Request):
        return apply_edit(session_of(request), "split", t.id, t.points)

    @app.post("/api/undo")
    def undo(request: Request):
        return apply_edit(session_of(request), "undo")

    @app.post("/api/redo")
    def redo(request: Request):
        return apply_edit(session_of(request), "redo")

    # ------------------------------------------------------------------ outputs
    @app.get("/api/export/{fmt}")
    def export(fmt: str, request: Request):
        session = session_of(request)
        with session.lock:
            result = session.ready_editor().result()
            data, filename, media = export_bytes(result, fmt, session.name)
        return Response(data, media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    @app.post("/api/save-example")
    def save(s: Split, request: Request):
        session = session_of(request)
        with session.lock:
            labels = session.ready_editor().labels
            return save_example(settings.train_dir, s.split, session.name, session.image, labels)

    return app
