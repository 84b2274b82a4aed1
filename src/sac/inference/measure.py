"""Per-nucleus measurements (the ``<stem>_nuclei.csv`` table and ``result.table``) via skimage regionprops."""

from __future__ import annotations

import numpy as np

COLUMNS = (
    "id",
    "centroid_x",
    "centroid_y",
    "area",
    "perimeter",
    "eccentricity",
    "solidity",
    "mean_intensity",
    "bbox_x0",
    "bbox_y0",
    "bbox_x1",
    "bbox_y1",
)


def nuclei_table(labels: np.ndarray, image: np.ndarray | None = None):
    """One row per nucleus of ``labels int [H, W]`` as a pandas DataFrame with :data:`COLUMNS`.

    ``centroid_*`` and ``bbox_*`` are in image pixels (x = column, y = row; bbox end exclusive); ``area`` in
    pixels; ``mean_intensity`` is the mean gray value (mean of R, G, B, 0..255) of ``image uint8 [H, W, 3]``
    inside the nucleus (NaN without an image). Rows are sorted by id.
    """
    import pandas as pd
    from skimage.measure import regionprops_table

    labels = np.asarray(labels)
    if labels.max() == 0:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c == "id" else "float64") for c in COLUMNS})
    props = ["label", "centroid", "area", "perimeter", "eccentricity", "solidity", "bbox"]
    intensity = None
    if image is not None:
        intensity = image.mean(axis=2, dtype=np.float32) if image.ndim == 3 else image.astype(np.float32)
        props.append("intensity_mean")
    t = regionprops_table(labels, intensity_image=intensity, properties=props)
    n = len(t["label"])
    return pd.DataFrame(
        {
            "id": t["label"].astype(np.int64),
            "centroid_x": t["centroid-1"],
            "centroid_y": t["centroid-0"],
            "area": t["area"].astype(np.int64),
            "perimeter": t["perimeter"],
            "eccentricity": t["eccentricity"],
            "solidity": t["solidity"],
            "mean_intensity": t["intensity_mean"] if intensity is not None else np.full(n, np.nan),
            "bbox_x0": t["bbox-1"],
            "bbox_y0": t["bbox-0"],
            "bbox_x1": t["bbox-3"],
            "bbox_y1": t["bbox-2"],
        },
        columns=list(COLUMNS),
    )
