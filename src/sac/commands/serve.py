"""`sac serve`: the browser app to segment, correct and export nuclei (docs/serve.md)."""

HELP = "Open a local web page to segment nuclei, correct them with clicks and export the result."

_EPILOG = """\
The page opens an image (upload, or --data-dir by name), segments it automatically, and lets you add / remove /
box / delete / merge / split nuclei with undo / redo; exports are the files of `sac segment`; "save as training
example" writes <train-dir>/<split>/images|labels for `sac train --init-from default --data TRAIN_DIR`.
A --host other than 127.0.0.1/localhost requires a token (generated and printed unless --token is given).
See docs/serve.md.
"""


def add_arguments(parser):
    from sac.inference.config import DEVICE_CHOICES, ENGINE_CHOICES
    from sac.web.settings import DEFAULT_HOST, DEFAULT_MAX_UPLOAD_MB, DEFAULT_MEMORY_MB, DEFAULT_PORT

    parser.epilog = _EPILOG
    parser.add_argument("--model", default="default",
                        help="'default' (bundled), 'sam' (zero-shot backbone), a model folder or a run folder")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to listen on; anything but 127.0.0.1/localhost requires a token")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="folder whose images (recursively) the page offers by name")
    parser.add_argument("--train-dir", default=None, metavar="DIR",
                        help="root of 'save as training example' (default: DATA_DIR/sac-corrections; "
                             "without --data-dir or --train-dir saving is off)")
    parser.add_argument("--token", default=None,
                        help="required on every request (default: none on 127.0.0.1, generated for other hosts)")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB, metavar="N",
                        help="largest accepted upload")
    parser.add_argument("--memory-mb", type=float, default=DEFAULT_MEMORY_MB, metavar="N",
                        help="memory budget of all sessions; beyond it the least recently used are closed")
    parser.add_argument("--engine", choices=ENGINE_CHOICES, default=None,
                        help="inference engine (default: the library's, see docs/engines.md)")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="cpu", help="where the model runs")
    parser.add_argument("--workers", type=int, default=1,
                        help="automatic segmentations run at once (others wait in a queue)")
    parser.add_argument("--sam-checkpoint", default=None, metavar="PATH",
                        help="official SAM .pth for models on a vit_b/l/h backbone")
    parser.add_argument("--open", action="store_true", help="open the page in the default web browser")


def run(args) -> int:
    import sys
    import threading
    import webbrowser

    from sac.errors import SACError
    from sac.web.settings import ServeSettings

    settings = ServeSettings(
        model=args.model, host=args.host, port=args.port, data_dir=args.data_dir, train_dir=args.train_dir,
        token=args.token, max_upload_mb=args.max_upload_mb, memory_mb=args.memory_mb, engine=args.engine,
        device=args.device, workers=args.workers, sam_checkpoint=args.sam_checkpoint,
    ).validate()
    try:
        import uvicorn

        from sac.web.app import create_app
    except ImportError as exc:
        raise SACError(f"sac serve needs the web extra ({exc.name} is missing): "
                       "pip install 'segment-any-cell[web]'") from None

    print(f"loading model {settings.model!r} ...", file=sys.stderr, flush=True)
    app = create_app(settings)
    url = settings.url()
    print(f"sac serve: {url}  (Ctrl-C to stop)", flush=True)
    if args.open:
        threading.Timer(1.0, webbrowser.open, args=(url,)).start()  # once uvicorn listens
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    return 0
