"""Python API: sac.load_model(...).segment(image) in a notebook, model resolution, and evaluate_model."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import skimage.data

import sac
from sac.errors import SACError
from sac.inference import api
from sac.inference.evaluate import evaluate_model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from sac.backbones import build_sac
    from sac.modelfile import save_model
    from sac.models.config import SACConfig, UNetConfig

    folder = tmp_path_factory.mktemp("run") / "best"
    cfg = SACConfig(backbone="vit_tiny", unet=UNetConfig(channels=(8, 16, 32, 64), num_res_units=0))
    save_model(folder, build_sac(cfg, pretrained=False), extra={"note": "test"})
    return folder


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    return skimage.data.immunohistochemistry()[:200, :180]


def test_load_and_segment_an_array(tiny_model, crop):
    model = sac.load_model(str(tiny_model))
    res = model.segment(crop, points=[[20, 30, 1], [150, 100, 0]])
    assert res.mask.shape == res.labels.shape == res.prob.shape == (200, 180)
    assert res.mask.dtype == bool and res.labels.dtype == np.int32 and res.prob.dtype == np.float32
    np.testing.assert_array_equal(res.mask, res.labels > 0)
    assert res.prompts.shape[1] == 3 and {0.0, 1.0} >= set(np.unique(res.prompts[:, 2]))
    assert [20, 30, 1] in res.prompts.tolist() and [150, 100, 0] in res.prompts.tolist()
    table = res.table
    assert len(table) == res.n_nuclei == res.labels.max()
    assert {"id", "centroid_x", "centroid_y", "area", "mean_intensity"} <= set(table.columns)
    # Same settings, same seed: identical output.
    again = model.segment(crop, points=[[20, 30, 1], [150, 100, 0]])
    np.testing.assert_array_equal(res.labels, again.labels)


def test_segment_a_path_and_grayscale_and_settings(tiny_model, crop, tmp_path):
    model = sac.load_model(str(tiny_model))
    path = tmp_path / "c.png"
    iio.imwrite(path, crop)
    from_path = model.segment(path)
    np.testing.assert_array_equal(from_path.labels, model.segment(crop).labels)
    gray = model.segment(crop[..., 0].astype(np.uint16) * 200, instances="components", n_points=2)
    assert gray.labels.shape == (200, 180) and gray.image.shape == (200, 180, 3)
    with pytest.raises(SACError, match="unexpected keyword"):
        model.segment(crop, colour="red")
    with pytest.raises(SACError, match="outside"):
        model.segment(crop, points=[[500, 5, 1]])


def test_run_folder_resolution(tiny_model):
    run = tiny_model.parent
    assert api.find_model_dir(run) == tiny_model
    assert api.find_model_dir(tiny_model) == tiny_model
    assert api.find_model_dir(tiny_model / "model.safetensors") == tiny_model
    with pytest.raises(SACError, match="no such folder"):
        api.load_model(str(run / "nope"))
    with pytest.raises(SACError, match="no model.safetensors"):
        api.find_model_dir(run.parent)


def test_missing_default_weights(monkeypatch, tmp_path):
    monkeypatch.setattr(api, "default_model_dir", lambda: tmp_path)
    with pytest.raises(SACError, match="bundled default model is missing"):
        sac.load_model("default")


def test_bad_device():
    with pytest.raises(SACError, match="--device"):
        sac.load_model("default", device="tpu")


def _tiny_dataset(root: Path, n: int = 2) -> None:
    """A 2-image standard-layout split cut from the real IHC image with disk 'nuclei' labels."""
    from skimage.draw import disk

    img = skimage.data.immunohistochemistry()
    for k in range(n):
        (root / "val" / "images").mkdir(parents=True, exist_ok=True)
        (root / "val" / "labels").mkdir(parents=True, exist_ok=True)
        iio.imwrite(root / "val" / "images" / f"im{k}.png", img[k * 100 : k * 100 + 150, :140])
        lab = np.zeros((150, 140), np.uint16)
        for j, (r, c) in enumerate([(30, 30), (80, 90), (120, 40)], start=1):
            lab[disk((r + k, c), 9, shape=lab.shape)] = j
        iio.imwrite(root / "val" / "labels" / f"im{k}.png", lab)


def test_evaluate_model_scores_like_segment(tiny_model, tmp_path):
    _tiny_dataset(tmp_path)
    res = evaluate_model(str(tiny_model), tmp_path, "val", expert=1, progress=False)
    for key in ("dice", "iou", "f1", "aji", "pq", "n_images", "n_true", "n_pred", "seconds_per_image", "settings"):
        assert key in res
    assert res["n_images"] == 2 and res["n_true"] == 6
    assert res["settings"]["expert"] == 1 and res["settings"]["window_pixels"] == 128
    # What evaluate scores is exactly what the API returns for the same image and simulated expert points.
    import zlib

    from sac.data.io import read_labels
    from sac.inference.experts import simulate_expert

    true = read_labels(tmp_path / "val" / "labels" / "im0.png")
    pts = simulate_expert(true, 1, np.random.default_rng([0, zlib.crc32(b"im0")]))
    direct = sac.load_model(str(tiny_model)).segment(tmp_path / "val" / "images" / "im0.png", points=pts)
    assert res["per_image"][0]["n_pred"] == direct.n_nuclei
    assert res["per_image"][0]["scale"] == direct.settings["scale"]  # each image's factor (auto: per image)
    again = evaluate_model(str(tiny_model), tmp_path, "val", expert=1, progress=False, limit=1)
    assert again["n_images"] == 1 and again["aji"] == pytest.approx(res["per_image"][0]["aji"])
    with pytest.raises(SACError, match="--expert"):
        evaluate_model(str(tiny_model), tmp_path, "val", expert=-1)


def test_evaluate_cli_uses_evaluate_model(tiny_model, tmp_path, capsys):
    from sac.cli import main

    _tiny_dataset(tmp_path, n=1)
    assert main(["evaluate", "--model", str(tiny_model), "--data", str(tmp_path), "--split", "val",
                 "--points", "0", "--json", str(tmp_path / "r.json")]) == 0
    import json

    result = json.loads((tmp_path / "r.json").read_text())
    assert result["settings"]["n_points"] == 0 and result["n_images"] == 1


@pytest.mark.slow
def test_zero_shot_sam_uses_expert_points_only():
    model = sac.load_model("sam")
    assert model.module.prompt_generator is None and not model.module.cfg.lora.enabled
    img = skimage.data.immunohistochemistry()[:200, :200]
    res = model.segment(img, points=[[50, 60, 1]])
    np.testing.assert_array_equal(res.prompts, [[50, 60, 1]])
    assert res.prompt_prob is None and res.labels.shape == (200, 200)
