"""File-level helpers of `sac segment`: expanding INPUT arguments and segmenting one file into its outputs."""

from __future__ import annotations

import contextlib
import functools
import glob
from collections.abc import Callable
from pathlib import Path

from sac.data.io import IMAGE_SUFFIXES, SLIDE_SUFFIXES
from sac.errors import SACError

INPUT_SUFFIXES = IMAGE_SUFFIXES + SLIDE_SUFFIXES  # what a folder given to `sac segment` contributes


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """Files, folders (images and slides, not recursive) and globs -> (unique sorted-per-argument paths, problems).

    A missing file is kept (it fails later with a clear message per file); an empty folder or a glob that
    matches nothing is reported as a problem. Two inputs with the same stem would overwrite each other's outputs:
    that is a problem too (the second one is skipped).
    """
    paths: list[Path] = []
    problems: list[str] = []
    for arg in inputs:
        p = Path(arg)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in INPUT_SUFFIXES
                           and not q.name.startswith("."))
            if not found:
                problems.append(f"{p}: folder has no images ({', '.join(INPUT_SUFFIXES)})")
            paths.extend(found)
        elif glob.has_magic(arg):
            found = sorted(Path(q) for q in glob.glob(arg) if Path(q).is_file())
            if not found:
                problems.append(f"{arg}: no file matches this pattern")
            paths.extend(found)
        else:
            paths.append(p)
    unique: list[Path] = []
    stems: dict[str, Path] = {}
    for p in paths:
        if p in unique:
            continue
        if p.stem in stems:
            problems.append(f"{p}: same name as {stems[p.stem]} (outputs would overwrite each other); skipped")
            continue
        stems[p.stem] = p
        unique.append(p)
    return unique, problems


def segment_file(segmenter, path: Path, out_dir: Path, formats, points=None, on_tile=None) -> dict:
    """Segment one image file and write its outputs; never raises for a bad file.

    Returns a summary row ``{"image", "nuclei", "mean_area", "scale", "seconds", "status"}`` (and ``scale_info``,
    :meth:`sac.inference.scale.ScaleEstimate.describe`, once the scale is known); ``status`` is ``"ok"`` or
    the one-line error naming the file. On failure, outputs already written for this image are removed, so no
    incomplete set of files is left behind.
    """
    return start_file(segmenter, path, out_dir, formats, points, on_tile)()


def start_file(segmenter, path: Path, out_dir: Path, formats, points=None, on_tile=None) -> Callable[[], dict]:
    """:func:`segment_file` in two stages: this call runs the model (read, scale, maps); the returned function
    makes the nuclei, writes the outputs and returns the row. The second stage calls no model, so `sac segment`
    runs it on a second thread while the model works on the next image (the CPU's second core is otherwise idle
    during post-processing: docs/segment.md)."""
    from sac.inference.experts import points_for
    from sac.inference.reader import open_image

    row = {"image": str(path), "nuclei": 0, "mean_area": "", "scale": "", "seconds": "", "status": "ok"}
    source = None
    try:
        source = open_image(path)
        pts = points_for(points, path)
        if pts is not None:
            from sac.inference.experts import check_points

            pts = check_points(pts, source.shape, str(path))
        from tqdm import tqdm

        scale = segmenter.scale_for(source)  # --scale auto estimates it here, once: segment() reuses it
        estimate = segmenter.scale_estimate
        bar = tqdm(total=len(segmenter.tiles_for(*source.shape, scale)), desc="tiles", unit="tile", leave=False,
                   disable=None)
        with bar:
            if pts is None:
                result = segmenter.segment_maps(source, on_tile=on_tile or bar.update)
            else:  # expert points are clicks on the automatic result (docs/segment.md)
                from sac.inference.experts import segment_with_points

                result = segment_with_points(segmenter, source, pts, on_tile=on_tile or bar.update)
    except (SACError, OSError) as exc:
        return functools.partial(_failed, row, exc, path, [])
    finally:
        if source is not None:
            source.close()

    def complete() -> dict:
        from sac.inference.writers import write_outputs

        written: list[Path] = []
        try:
            if result.labels is None:
                segmenter.finish(result)
            write_outputs(result, out_dir, path.stem, formats, written=written)
        except (SACError, OSError) as exc:
            return _failed(row, exc, path, written)
        # result.seconds starts after the estimate above: add it so the row is the whole time of the image
        row.update(nuclei=result.n_nuclei, seconds=round(result.seconds + estimate.seconds, 2), scale=round(scale, 4),
                   scale_info=estimate.describe())
        if result.n_nuclei:
            row["mean_area"] = round(float(result.mask.sum()) / result.n_nuclei, 1)
        return row

    return complete


def _failed(row: dict, exc: Exception, path: Path, written: list[Path]) -> dict:
    """``row`` with the one-line error of ``exc`` (SACError, or an OSError such as an unwritable output folder or a
    full disk) as its status; the outputs already ``written`` for this image are removed."""
    if isinstance(exc, SACError):
        row["status"] = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
    else:
        row["status"] = f"{path}: {type(exc).__name__}: {exc}"
    row["status"] = row["status"].splitlines()[0].strip()  # one line: decoders' messages can be multi-line
    for p in written:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return row
