"""`sac evaluate --pred` end to end, the --model delegation, and report.score()."""

from __future__ import annotations

import json
import shutil
import sys
import types

import numpy as np
import pytest
import tifffile

from sac.cli import main
from sac.data.io import list_pairs, read_labels, write_image, write_labels
from sac.evaluation.report import format_table, score
from sac.inference.config import InferenceConfig

KEYS = ("dice", "iou", "f1", "dice_pooled", "iou_pooled", "f1_pooled", "aji", "aji_plus", "pq", "dq", "sq",
        "object_f1", "n_images", "precision", "recall", "n_true", "n_pred")


def _labels(seed):
    lab = np.zeros((32, 32), np.int32)
    rng = np.random.default_rng(seed)
    for k in range(1, 6):
        r, c = rng.integers(2, 26, 2)
        lab[r : r + 5, c : c + 5] = k
    return lab


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    for k in range(3):
        write_image(root / "val" / "images" / f"im{k}.png", np.zeros((32, 32, 3), np.uint8))
        write_labels(root / "val" / "labels" / f"im{k}.png", _labels(k))
    return root


def test_perfect_prediction_from_ground_truth(data, tmp_path, capsys):
    pred = tmp_path / "pred"
    shutil.copytree(data / "val" / "labels", pred)
    out = tmp_path / "r.json"
    assert main(["evaluate", "--pred", str(pred), "--data", str(data), "--split", "val", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert all(k in res for k in KEYS)
    for k in KEYS:
        if not k.startswith("n_"):
            assert res[k] == pytest.approx(1.0), k
    assert res["n_images"] == 3 and res["n_true"] == res["n_pred"] == res["n_matched"]
    assert [r["id"] for r in res["per_image"]] == ["im0", "im1", "im2"]
    assert "mean over images" in res["averaging"]
    printed = capsys.readouterr().out
    assert "aji_plus" in printed and "dice_pooled" in printed


def test_segment_style_names_binary_masks_and_perturbation(data, tmp_path):
    from skimage.measure import label

    pred = tmp_path / "pred"
    pred.mkdir()
    truth = {pid: read_labels(lab) for pid, _, lab in list_pairs(data, "val")}
    # im0: instance map written by `sac segment` as <id>_labels.tif, shifted by one pixel
    tifffile.imwrite(pred / "im0_labels.tif", np.roll(truth["im0"], 1, axis=1).astype(np.uint16))
    # im1: binary mask <id>_mask.png (0/255) -> connected components
    write_image(pred / "im1_mask.png", ((truth["im1"] > 0) * 255).astype(np.uint8))
    # im2: one nucleus dropped
    dropped = truth["im2"].copy()
    dropped[dropped == 3] = 0
    write_labels(pred / "im2.png", dropped)
    res = score((pid, truth[pid], read_labels(p)) for pid, p in
                [("im0", pred / "im0_labels.tif"), ("im1", pred / "im1_mask.png"), ("im2", pred / "im2.png")])
    out = tmp_path / "r.json"
    assert main(["evaluate", "--pred", str(pred), "--data", str(data), "--split", "val", "--json", str(out)]) == 0
    cli = json.loads(out.read_text())
    assert cli["aji"] == pytest.approx(res["aji"]) and cli["dice"] == pytest.approx(res["dice"])
    rows = {r["id"]: r for r in cli["per_image"]}
    assert 0.5 < rows["im0"]["aji"] < 1 and rows["im0"]["dice"] < 1
    assert rows["im1"]["dice"] == 1.0  # same foreground; instances from connected components
    assert rows["im1"]["n_pred"] == label(truth["im1"] > 0).max()
    assert rows["im2"]["n_pred"] == rows["im2"]["n_true"] - 1 and rows["im2"]["object_recall"] < 1
    assert rows["im2"]["precision"] == 1.0 and rows["im2"]["recall"] < 1
    assert cli["aji"] < 1


def test_missing_and_wrong_size_predictions(data, tmp_path, capsys):
    pred = tmp_path / "pred"
    shutil.copytree(data / "val" / "labels", pred)
    (pred / "im1.png").unlink()
    assert main(["evaluate", "--pred", str(pred), "--data", str(data), "--split", "val"]) == 2
    assert "no prediction for image 'im1'" in capsys.readouterr().err
    write_labels(pred / "im1.png", np.zeros((16, 32), np.int32))
    out = tmp_path / "r.json"
    assert main(["evaluate", "--pred", str(pred), "--data", str(data), "--split", "val", "--json", str(out)]) == 2
    assert "im1.png" in capsys.readouterr().err and not out.exists()


def test_argument_errors(data, tmp_path, capsys):
    assert main(["evaluate", "--data", str(data)]) == 2
    assert "exactly one of --pred" in capsys.readouterr().err
    assert main(["evaluate", "--pred", "x", "--model", "default", "--data", str(data)]) == 2
    assert main(["evaluate", "--pred", str(tmp_path), "--points", "3", "--data", str(data), "--split", "val"]) == 2
    assert "--points" in capsys.readouterr().err
    assert main(["evaluate", "--pred", str(tmp_path / "nope"), "--data", str(data), "--split", "val"]) == 2
    assert "prediction folder not found" in capsys.readouterr().err


def test_unwritable_json_fails_before_scoring(data, tmp_path, monkeypatch, capsys):
    import sac.evaluation.report as report

    pred = tmp_path / "pred"
    shutil.copytree(data / "val" / "labels", pred)
    blocker = tmp_path / "file"
    blocker.write_text("x")

    def never(*a, **k):
        raise AssertionError("scored before checking --json")

    monkeypatch.setattr(report, "score_folder", never)
    for out in (tmp_path, blocker / "r.json"):  # an existing folder; a path under a file
        assert main(["evaluate", "--pred", str(pred), "--data", str(data), "--split", "val", "--json", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: cannot write {out}") and err.count("\n") == 1


def test_model_delegates_to_evaluate_model(data, tmp_path, monkeypatch, capsys):
    calls = {}

    def evaluate_model(model, data_root, split, cfg, **kw):
        calls.update(model=model, data=data_root, split=split, cfg=cfg, **kw)
        truth = [read_labels(lab) for _, _, lab in list_pairs(data_root, split)]
        res = score((t, t) for t in truth)
        res["seconds_per_image"] = 0.25
        return res

    monkeypatch.setitem(sys.modules, "sac.inference.evaluate", types.SimpleNamespace(evaluate_model=evaluate_model))
    out = tmp_path / "m.json"
    assert main(["evaluate", "--model", "run1", "--data", str(data), "--split", "val", "--points", "4",
                 "--select", "random", "--tile", "256", "--limit", "2", "--json", str(out)]) == 0
    cfg = calls["cfg"]
    assert calls["model"] == "run1" and calls["split"] == "val" and cfg.n_points == 4
    assert cfg.select == "random" and cfg.tile == 256 and calls["limit"] == 2
    assert calls["expert"] == 0 and cfg.seed == 0 and calls["device"] == "cpu" and cfg.overlap is None
    assert cfg == InferenceConfig(tile=256, n_points=4, select="random")  # flags not given: library defaults
    assert json.loads(out.read_text())["seconds_per_image"] == 0.25
    assert "seconds per image 0.250" in capsys.readouterr().out


def test_score_two_tuples_and_table():
    t = _labels(0)
    res = score([(t, t), (t, np.zeros_like(t))])
    assert res["n_images"] == 2
    assert res["dice"] == pytest.approx(0.5) and res["dice_pooled"] == pytest.approx(2 / 3)
    assert res["aji"] == pytest.approx(0.5)
    table = format_table(res)
    assert "dice_pooled" in table and "0.5000" in table
    rows = {line.split()[0]: line for line in table.splitlines()}
    assert rows["aji"].endswith("mean over images (instance)")
    assert rows["pq"].endswith("(instance, match IoU > 0.5)") and rows["object_f1"].endswith("IoU > 0.5)")


@pytest.mark.data
@pytest.mark.slow
def test_real_monuseg_ground_truth_and_perturbed(data_root, tmp_path):
    from scipy import ndimage as ndi

    ids = ["TCGA-21-5784-01Z-00-DX1", "TCGA-B0-5711-01Z-00-DX1"]
    root = tmp_path / "data"
    for pid in ids:
        for kind in ("images", "labels"):
            (root / "val" / kind).mkdir(parents=True, exist_ok=True)
            shutil.copy(data_root / "monuseg" / "train" / kind / f"{pid}.png", root / "val" / kind)
    perfect, eroded = tmp_path / "perfect", tmp_path / "eroded"
    shutil.copytree(root / "val" / "labels", perfect)
    eroded.mkdir()
    for pid in ids:
        lab = read_labels(root / "val" / "labels" / f"{pid}.png")
        # erode every nucleus by one pixel (grey erosion shrinks each id where it meets another/background)
        shrunk = np.where(ndi.grey_erosion(lab, size=3) == ndi.grey_dilation(lab, size=3), lab, 0)
        write_labels(eroded / f"{pid}.png", shrunk)
    outs = {}
    for name, folder in (("perfect", perfect), ("eroded", eroded)):
        out = tmp_path / f"{name}.json"
        assert main(["evaluate", "--pred", str(folder), "--data", str(root), "--split", "val", "--json", str(out)]) == 0
        outs[name] = json.loads(out.read_text())
    assert outs["perfect"]["aji"] == 1.0 and outs["perfect"]["pq"] == 1.0 and outs["perfect"]["n_true"] == 740
    e = outs["eroded"]
    assert 0.4 < e["aji"] < 0.95 and e["precision"] == 1.0 and e["recall"] < 0.9
    assert e["aji_plus"] >= e["aji"] - 1e-9
