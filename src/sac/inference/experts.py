"""Expert point prompts: parsing (``--expert-points``), validation against an image, simulated experts, and
applying them to a segmentation through the editor (:func:`apply_points`).

A point is ``(x, y, label)`` in *image pixel* coordinates: x = column, y = row, label 1 = nucleus (positive),
0 = background (negative). Arrays are ``float32 [N, 3]``.

Accepted ``--expert-points`` forms:
* inline ``"x,y,label;x,y,label"`` (label may be omitted: 1);
* a JSON file holding a list of points (``[[x, y, label], ...]`` or ``[{"x":..,"y":..,"label":..}, ...]``),
  applied to every input image, or an object mapping image file names or stems to such lists.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from sac.errors import SACError


def _point(item, where: str) -> tuple[float, float, float]:
    if isinstance(item, dict):
        try:
            x, y, lab = item["x"], item["y"], item.get("label", 1)
        except KeyError as exc:
            raise SACError(f"{where}: point {item!r} lacks key {exc}") from None
    elif isinstance(item, list | tuple) and len(item) in (2, 3):
        x, y, lab = (*item, 1) if len(item) == 2 else item
    else:
        raise SACError(f"{where}: point {item!r} is not [x, y, label] or {{'x','y','label'}}")
    try:
        x, y, lab = float(x), float(y), float(lab)
    except (TypeError, ValueError):
        raise SACError(f"{where}: point {item!r} has non-numeric values") from None
    if lab not in (0.0, 1.0):
        raise SACError(f"{where}: point {item!r} has label {lab:g}; use 1 (nucleus) or 0 (background)")
    if not (np.isfinite(x) and np.isfinite(y)):
        raise SACError(f"{where}: point {item!r} is not finite")
    return x, y, lab


def _points_array(items, where: str) -> np.ndarray:
    if not isinstance(items, list):
        raise SACError(f"{where}: expected a list of points, got {type(items).__name__}")
    pts = [_point(it, where) for it in items]
    return np.asarray(pts, dtype=np.float32).reshape(-1, 3)


def parse_inline(text: str) -> np.ndarray:
    """``"x,y,label;x,y"`` -> ``float32 [N, 3]``. Raises :class:`SACError` quoting the bad part."""
    items = []
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        fields = [f.strip() for f in part.split(",")]
        if len(fields) not in (2, 3) or not all(fields):
            raise SACError(f"--expert-points: bad point {part!r}; expected 'x,y,label' with label 1 or 0")
        items.append(fields)
    if not items:
        raise SACError(f"--expert-points: no points in {text!r}")
    return _points_array(items, "--expert-points")


def parse_expert_points(value: str | None) -> np.ndarray | dict[str, np.ndarray] | None:
    """Parse ``--expert-points``: inline text or a JSON file (see module docstring).

    Returns ``None`` (no points), one ``float32 [N, 3]`` array for every image, or ``{name_or_stem: array}``.
    """
    if value is None:
        return None
    if value.lower().endswith(".json") or Path(value).is_file():
        path = Path(value)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise SACError(f"{path}: expert points file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SACError(f"{path}: not valid JSON ({exc})") from None
        if isinstance(data, dict):
            return {str(k): _points_array(v, f"{path} [{k}]") for k, v in data.items()}
        return _points_array(data, str(path))
    return parse_inline(value)


def points_for(points, image_path: Path) -> np.ndarray | None:
    """Pick the points that apply to ``image_path`` from :func:`parse_expert_points` output."""
    if points is None or isinstance(points, np.ndarray):
        return points
    for key in (image_path.name, image_path.stem, str(image_path)):
        if key in points:
            return points[key]
    return None


def check_points(points: np.ndarray | None, shape: tuple[int, int], name: str) -> np.ndarray | None:
    """Raise :class:`SACError` naming ``name`` if a point is not finite, has a label other than 1 / 0 or lies
    outside an image of ``shape`` (H, W); returns ``float32 [N, 3]`` (None for no points)."""
    if points is None or len(points) == 0:
        return None
    try:
        points = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    except (TypeError, ValueError):
        raise SACError(f"{name}: expert points must be numbers [[x, y, label], ...]") from None
    if not np.isfinite(points).all():
        raise SACError(f"{name}: expert point {points[~np.isfinite(points).all(1)][0].tolist()} is not finite")
    if not np.isin(points[:, 2], (0, 1)).all():
        raise SACError(f"{name}: expert point labels must be 1 (nucleus) or 0 (background)")
    H, W = shape
    bad = (points[:, 0] < 0) | (points[:, 0] > W - 1) | (points[:, 1] < 0) | (points[:, 1] > H - 1)
    if bad.any():
        x, y, _ = points[np.argmax(bad)]
        raise SACError(f"{name}: expert point ({x:g}, {y:g}) is outside the {W}x{H} image (x < {W}, y < {H})")
    return points


def simulate_expert(labels: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """``m`` positive + ``m`` negative points as an expert would click them (paper Tables 3-4).

    Positives: ``m`` ground-truth nuclei chosen at random, each clicked at its innermost pixel (maximum of the
    distance transform inside the nucleus). Negatives: ``m`` background pixels at random, at least 3 pixels
    from any nucleus when possible. Returns ``float32 [<=2m, 3]`` (x, y, label).
    """
    from scipy import ndimage as ndi

    labels = np.asarray(labels)
    out = []
    ids = np.unique(labels)
    ids = ids[ids > 0]
    if m > 0 and len(ids):
        chosen = rng.choice(ids, size=min(m, len(ids)), replace=False)
        slices = ndi.find_objects(labels)
        for i in chosen:
            sl = slices[int(i) - 1]
            inside = labels[sl] == i
            dist = ndi.distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1]
            r, c = np.unravel_index(int(np.argmax(dist)), dist.shape)
            out.append((c + sl[1].start, r + sl[0].start, 1.0))
    if m > 0:
        bg = ~ndi.binary_dilation(labels > 0, iterations=3)
        if not bg.any():
            bg = labels == 0
        ys, xs = np.nonzero(bg)
        if len(ys):
            pick = rng.choice(len(ys), size=min(m, len(ys)), replace=False)
            out.extend((float(xs[k]), float(ys[k]), 0.0) for k in pick)
    return np.asarray(out, dtype=np.float32).reshape(-1, 3)


def apply_points(editor, points) -> list:
    """Apply expert points ``float [N, 3]`` (x, y, label; image pixels) as edits of ``editor``
    (:class:`sac.inference.editor.Editor`) -> the :class:`~sac.inference.editor.Edit` of each; the rule of
    ``sac segment --expert-points``, ``model.segment(points=...)`` and ``sac evaluate --expert``:

    1. each negative point removes the instance under it (on background: nothing);
    2. each positive point on background adds the nucleus there (a missed nucleus); a positive point on a detected
       nucleus leaves it as it is (the automatic result already has it);
    3. an instance holding two or more positive points is split, one part per point (several nuclei detected
       as one).
    """
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    edits = [editor.remove(x, y) for x, y, lab in pts if lab == 0]
    positives = pts[pts[:, 2] == 1]
    edits += [editor.add(x, y) for x, y, _ in positives if editor.instance_at(x, y) == 0]
    groups: dict[int, list] = defaultdict(list)
    for x, y, _ in positives:
        i = editor.instance_at(x, y)
        if i:
            groups[i].append([float(x), float(y)])
    edits += [editor.split(i, g) for i, g in groups.items() if len(g) >= 2]
    return edits


def segment_with_points(segmenter, source, points, on_tile=None):
    """``segmenter``'s automatic segmentation of ``source`` corrected by expert ``points float [N, 3]`` through
    the editor (:func:`apply_points`) -> :class:`~sac.inference.segmenter.SegmentationResult` whose ``prompts``
    list every expert point after the automatic prompts (also the points that changed nothing)."""
    from sac.inference.editor import Editor

    editor = Editor.from_segmenter(segmenter, source, on_tile=on_tile, embed=False)  # a few points: embed lazily
    apply_points(editor, points)
    return editor.result(clicks=points)
