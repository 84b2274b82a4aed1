"""Whole slides and big images block by block, in this process or on a Dask cluster, resumable.

:func:`segment_blocks` plans a :class:`~sac.inference.block.Job` for one image (analysis level and scale from the
slide's microns per pixel, ROI, tissue mask on a thumbnail, block grid), computes the blocks that are not done
yet -- in this process, on a ``dask.distributed.LocalCluster`` of ``workers`` processes, or on an existing cluster
at ``scheduler`` -- and streams the block results into the final outputs (:mod:`sac.inference.slide_outputs`).

Why Dask: it is the engine Cellpose's ``distributed_eval`` uses; it brings local process pools, multi-machine and
SLURM clusters (``dask-jobqueue``), task retries when a worker dies, and a dashboard, none of which is worth
hand-writing. Each block is one task of the pure function :func:`sac.inference.block.segment_block`.

Resumable: block results are files in ``<out>/.sac-blocks/<stem>/`` (one atomic ``.npz`` per block, next to
``job.json``, the job's settings). ``resume=True`` computes only the blocks without a file, after checking that
``job.json`` matches; the final outputs are a function of the block files only, so a resumed run writes exactly
what an uninterrupted one does. The folder is removed once the outputs are complete. With a cluster on several
machines, the output folder must be on a file system all workers see.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from sac.errors import SACError
from sac.inference.block import Job, segment_block

BLOCKS_DIR = ".sac-blocks"
BLOCK = 2048  # core side in analysis pixels: window (2048 + 2 halo)^2 keeps a block's watershed under ~0.5 GB
HALO = 128  # analysis pixels at scale 1 (> largest nucleus + blockwise.MARGIN); divided by the scale below 1


@dataclass
class SlideOptions:
    """Block-wise settings of `sac segment` (None = default). ``workers`` 0/None and no ``scheduler``: in-process."""

    workers: int | None = None
    scheduler: str | None = None
    mpp: float | None = None
    roi: tuple[int, int, int, int] | None = None
    tissue_threshold: float | None = None
    tissue_mask: bool = True
    resume: bool = False
    block: int | None = None
    halo: int | None = None

    def validate(self) -> SlideOptions:
        if self.workers is not None and self.workers < 0:
            raise SACError(f"--workers must be >= 0, got {self.workers}")
        if self.workers and self.scheduler:
            raise SACError("--workers starts a local cluster, --scheduler uses an existing one: give only one")
        if self.tissue_threshold is not None and not (0 <= self.tissue_threshold < 1):
            raise SACError(f"--tissue-threshold must be in [0, 1), got {self.tissue_threshold}")
        if self.block is not None and self.block < 64:
            raise SACError(f"--block must be >= 64 pixels, got {self.block}")
        if self.halo is not None and self.halo <= 16:
            raise SACError(f"--halo must be > 16 pixels, got {self.halo}")
        return self


def model_mpp(model: str) -> float | None:
    """The training resolution recorded in a model's config.json (``SACConfig.mpp``), without loading weights."""
    if model == "sam" or model.startswith("sam:"):
        return None
    from sac.inference.api import default_model_dir, find_model_dir
    from sac.modelfile import read_model_config

    folder = default_model_dir() if model == "default" else find_model_dir(model)
    value = read_model_config(folder).get("config", {}).get("mpp")
    return float(value) if value else None


def plan(path: Path, model: str, cfg, opts: SlideOptions, out_dir: Path, *, kind: str, device: str = "cpu",
         sam_checkpoint: str | None = None, scale_for=None) -> tuple[Job, object, dict]:
    """(job, open source, summary dict) for one image; ``kind`` ``slide`` or ``flat``. ``scale_for(source)``
    resolves a non-numeric ``cfg.scale`` (``auto``). Raises SACError for a missing mpp, an unreadable file, a ROI
    outside the slide."""
    m_mpp = model_mpp(model) if kind == "slide" else None
    base = Job(path=str(path), kind=kind, model=model, sam_checkpoint=sam_checkpoint, device=device, cfg={},
               shape=(0, 0), block=1, halo=1, blocks_dir="", model_mpp=m_mpp, mpp=opts.mpp, roi=opts.roi)
    if kind == "flat" and opts.roi is not None:
        raise SACError(f"{path}: --roi applies to whole-slide images only")
    if kind == "slide":
        from sac.inference.slide import SlideSource

        source = SlideSource(path, model_mpp=m_mpp, mpp=opts.mpp, roi=opts.roi)
    else:
        from sac.inference.reader import open_image

        source = open_image(path)
    try:
        scale = getattr(source, "scale", None)
        if scale is None and opts.mpp is not None and kind == "flat" and model_mpp(model):
            from sac.inference.scale import scale_from_mpp

            scale = scale_from_mpp(opts.mpp, model_mpp(model))
        if scale is None:  # the caller's scale: a number, or the segmenter's estimate for this image ("auto")
            scale = float(cfg.scale) if isinstance(cfg.scale, int | float) else float(scale_for(source))
        H, W = source.shape
        halo = opts.halo or math.ceil(HALO / min(scale, 1.0))
        block = opts.block or BLOCK
        skip, tissue = (), 1.0
        if kind == "slide" and opts.tissue_mask:
            skip, tissue = _tissue_skip(source, H, W, block, halo, opts.tissue_threshold)
        job = dataclasses.replace(
            base, cfg={**dataclasses.asdict(cfg), "scale": scale}, shape=(H, W), block=block, halo=halo,
            blocks_dir=str(Path(out_dir) / BLOCKS_DIR / path.stem), origin=getattr(source, "_origin", (0, 0)),
            downsample=getattr(source, "downsample", 1.0), mpp=getattr(source, "mpp", opts.mpp), skip=skip,
        )
    except BaseException:
        source.close()
        raise
    summary = {"image": str(path), "kind": kind, "level": getattr(source, "level", 0),
               "downsample": job.downsample, "mpp": job.mpp, "model_mpp": m_mpp, "scale": scale,
               "roi": list(getattr(source, "roi", (0, 0, W, H))), "analysis_shape": [H, W], "block": block,
               "halo": halo, "blocks": len(job.cores()), "blocks_without_tissue": len(skip),
               "tissue_fraction": round(tissue, 4), "tissue_megapixels": round(tissue * H * W / 1e6, 3)}
    return job, source, summary


def _tissue_skip(source, H: int, W: int, block: int, halo: int, threshold) -> tuple[tuple[int, ...], float]:
    """Blocks whose core plus halo holds no tissue in the thumbnail mask, and the tissue fraction."""
    from sac.inference.slide import tissue_mask
    from sac.postprocess.blockwise import block_grid

    thumb, f = source.thumbnail()
    mask, _ = tissue_mask(thumb, threshold)
    skip = []
    for i, (y0, y1, x0, x1) in enumerate(block_grid(H, W, block)):
        ty0, tx0 = int(max(0, y0 - halo) / f), int(max(0, x0 - halo) / f)
        ty1, tx1 = math.ceil(min(H, y1 + halo) / f), math.ceil(min(W, x1 + halo) / f)
        if not mask[ty0:ty1, tx0:tx1].any():
            skip.append(i)
    return tuple(skip), float(mask.mean())


def _prepare_dir(job: Job, resume: bool) -> list[int]:
    """Create or check the job's block folder; the block indices still to compute."""
    folder = Path(job.blocks_dir)
    record = folder / "job.json"
    key = job.key()
    if record.is_file():
        if not resume:
            raise SACError(f"{folder}: an unfinished run of this image is there; pass --resume to finish it, or "
                           "delete that folder to start again")
        if json.loads(record.read_text()) != json.loads(key):
            raise SACError(f"--resume: {folder} belongs to a run with other settings (model, scale, ROI, block or "
                           "tissue options); delete that folder to start again")
    else:
        from sac.atomic import atomic_write_text

        for stale in folder.glob("block-*.npz") if folder.is_dir() else []:
            stale.unlink()  # results without a job record: not trusted
        atomic_write_text(record, key)
    skip = set(job.skip)
    return [i for i in range(len(job.cores())) if i not in skip and not job.result_path(i).is_file()]


@contextlib.contextmanager
def _client(workers: int | None, scheduler: str | None):
    """A dask.distributed Client: of an existing cluster (``scheduler``) or of a LocalCluster of ``workers``
    single-threaded processes (closed on exit). SACError when the scheduler cannot be reached."""
    import logging

    from dask.distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise SACError(f"--scheduler {scheduler}: cannot connect ({str(exc).splitlines()[0]})") from None
        with client:
            yield client
        return
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        yield client


def _run_dask(client, job: Job, todo: list[int], on_block) -> None:
    """Every block of ``todo`` as one task (retried twice, e.g. when its worker dies); ``on_block`` per result."""
    from dask.distributed import as_completed

    token = f"{Path(job.blocks_dir).name}-{os.getpid()}-{time.time_ns()}"
    futures = client.map(segment_block, [job] * len(todo), todo, key=[f"sac-block-{i}-{token}" for i in todo],
                         retries=2, pure=False)
    for fut in as_completed(futures):
        on_block(fut.result())


def segment_blocks(path: Path, model, cfg, opts: SlideOptions, out_dir: Path, formats, *, kind: str,
                   segmenter=None, progress=None) -> dict:
    """Segment one image block-wise into ``out_dir``; returns the summary (also written as ``<stem>_slide.json``).

    ``model``: name/folder as for :func:`sac.inference.api.load_model`; ``kind``: ``slide`` or ``flat``;
    ``segmenter``: an already loaded Segmenter of that model, reused by in-process blocks; ``progress(n_total)``
    -> a callable(n) called per finished block.
    """
    from sac.inference.slide_outputs import assemble

    start = time.perf_counter()
    opts = opts.validate()
    distributed = bool(opts.workers or opts.scheduler)
    job, source, summary = plan(path, str(model), cfg, opts, out_dir, kind=kind,
                                device=str(segmenter.device) if segmenter is not None else "cpu",
                                scale_for=getattr(segmenter, "scale_for", None))
    # Local processes share the cores; remote workers (0) keep torch's default for their machine.
    threads = 0 if opts.scheduler else max(1, (os.cpu_count() or 1) // (opts.workers or 1))
    job = dataclasses.replace(job, threads=threads)
    try:
        with contextlib.ExitStack() as stack:
            # Connect first: an unreachable scheduler must fail before any block folder is created.
            client = stack.enter_context(_client(opts.workers, opts.scheduler)) if distributed else None
            summary.update(_compute(job, client, opts.resume, segmenter, progress))
        summary.update(workers=opts.workers or 0, scheduler=opts.scheduler,
                       seconds_blocks=round(time.perf_counter() - start, 2))
        assemble(job, Path(out_dir), path.stem, formats, source, summary)
    finally:
        source.close()
    shutil.rmtree(job.blocks_dir, ignore_errors=True)
    parent = Path(job.blocks_dir).parent
    if parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
    summary["seconds"] = round(time.perf_counter() - start, 2)
    return summary


def _compute(job: Job, client, resume: bool, segmenter, progress) -> dict:
    """Compute the blocks of ``job`` not done yet, on ``client`` or (None) in this process -> summary entries."""
    from sac.inference import block as blockmod

    todo = _prepare_dir(job, resume)
    n_total = len(job.cores()) - len(job.skip)
    done_before = n_total - len(todo)
    tick = progress(n_total) if progress is not None else (lambda n: None)
    tick(done_before)
    totals = {"tiles_run": 0, "block_cpu_seconds": 0.0, "block_seconds": 0.0}

    def on_block(result: dict) -> None:
        for name, key in (("tiles_run", "tiles"), ("block_cpu_seconds", "cpu_seconds"), ("block_seconds", "seconds")):
            totals[name] += result[key]
        tick(1)

    if client is not None:
        _run_dask(client, job, todo, on_block)
    else:
        if segmenter is not None:  # reuse the caller's loaded model instead of loading it again
            from sac.inference.config import InferenceConfig

            seg = type(segmenter)(segmenter.model, InferenceConfig(**job.cfg), device=segmenter.device)
            blockmod._cached(blockmod.segmenter_key(job), lambda: seg)
        for i in todo:
            on_block(segment_block(job, i))
    return {"blocks_computed": sorted(todo), "blocks_resumed": done_before,
            **{k: round(v, 2) if isinstance(v, float) else v for k, v in totals.items()}}


def segment_blocks_file(path: Path, model, segmenter, opts: SlideOptions, out_dir: Path, formats,
                        points=None) -> dict:
    """:func:`segment_blocks` for `sac segment`: never raises for a bad file; returns its summary row
    ``{"image", "nuclei", "mean_area", "seconds", "status"}`` (status ``ok`` or a one-line error naming the file)."""
    import sys

    from tqdm import tqdm

    from sac.inference.slide import is_slide

    row = {"image": str(path), "nuclei": 0, "mean_area": "", "seconds": "", "status": "ok"}
    try:
        if points is not None:
            raise SACError("--expert-points are not supported block-wise (slides, --workers, --scheduler)")
        if not path.is_file():
            raise SACError("no such file")
        bar = None

        def progress(total: int):
            nonlocal bar
            bar = tqdm(total=total, desc="blocks", unit="block", leave=False, disable=None, file=sys.stderr)
            return bar.update

        try:
            summary = segment_blocks(path, model, segmenter.cfg, opts, out_dir, formats,
                                     kind="slide" if is_slide(path) else "flat", segmenter=segmenter,
                                     progress=progress)
        finally:
            if bar is not None:
                bar.close()
        row.update(nuclei=summary["nuclei"], seconds=summary["seconds"])
    except SACError as exc:
        row["status"] = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
    except OSError as exc:  # e.g. the output folder is not writable or the disk is full
        row["status"] = f"{path}: {type(exc).__name__}: {exc}"
    row["status"] = row["status"].splitlines()[0].strip() if row["status"] != "ok" else "ok"
    return row
