"""Regression test of the bundled model (src/sac/weights/default): its file format and weights hash, and what it
segments on one real MoNuSeg crop with ground truth (a hold-out image, never trained on).

Reference values measured with this repository's code on the shared machine (torch CPU, 2 threads):
``python tests/test_default_model.py`` prints them again. Tolerances allow for float differences across CPUs and
library versions (a nucleus more or less where the watershed has a near-tie), not for a model change.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import sac
from sac.backbones import file_sha256
from sac.errors import SACError
from sac.inference.api import default_model_dir
from sac.modelfile import read_model_config

IMAGE = "TCGA-21-5784-01Z-00-DX1"  # one of the 6 MoNuSeg validation images of the default model
CROP = (slice(256, 512), slice(256, 512))  # one 256 px tile: a single encoder pass
REF_NUCLEI, NUCLEI_TOL = 32, 2  # 39 ground-truth nuclei (some cut by the crop border)
REF_DICE, DICE_TOL = 0.818, 0.01  # default settings: --scale auto snaps this native 40x crop to 1 (estimated 26.5 px)


def test_bundled_model_format_and_hash():
    folder = default_model_dir()
    meta = read_model_config(folder)  # format "sac-model", a supported format_version
    assert meta["format"] == "sac-model" and meta["format_version"] == 1
    assert meta["backbone"] == "litemedsam" and not meta["includes_backbone"]
    assert file_sha256(folder / "model.safetensors") == meta["weights_sha256"]
    assert meta["config"]["lora"]["last_n_layers"] == 4 and meta["config"]["unet"]["distance_head"]
    assert not str(meta["extra"]["training"]["run"]).startswith("/")  # no machine path in a shipped model


def test_a_changed_weights_file_is_refused(tmp_path):
    copy = tmp_path / "default"
    shutil.copytree(default_model_dir(), copy)
    blob = bytearray((copy / "model.safetensors").read_bytes())
    blob[-1] ^= 0xFF  # one flipped byte in the last tensor's data
    (copy / "model.safetensors").write_bytes(bytes(blob))
    with pytest.raises(SACError, match="sha256|hash"):
        sac.load_model(str(copy))


def _segment_crop(data_root):
    from sac.data.io import read_image, read_labels
    from sac.evaluation.pixel import pixel_scores

    root = data_root / "monuseg" / "train"
    image = read_image(root / "images" / f"{IMAGE}.png")[CROP]
    true = read_labels(root / "labels" / f"{IMAGE}.png")[CROP]
    result = sac.load_model("default").segment(image)
    return result, true, pixel_scores(true > 0, result.labels > 0)["dice"]


@pytest.mark.data
@pytest.mark.slow
def test_bundled_model_on_a_real_crop(data_root):
    result, true, dice = _segment_crop(data_root)
    assert result.labels.shape == true.shape
    assert result.settings["scale"] == 1.0  # a native-magnification image is segmented at scale 1
    assert abs(result.n_nuclei - REF_NUCLEI) <= NUCLEI_TOL, result.n_nuclei
    assert abs(dice - REF_DICE) <= DICE_TOL, dice
    assert len(np.unique(result.labels)) == result.n_nuclei + 1  # ids 1..N


if __name__ == "__main__":
    from pathlib import Path

    res, truth, d = _segment_crop(Path(__file__).resolve().parents[2] / "shared" / "data")
    print(f"nuclei {res.n_nuclei} (ground truth {len(np.unique(truth)) - 1}), dice {d:.4f}")
