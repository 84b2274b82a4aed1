"""`sac train` end to end on a tiny random ViT SAM (``vit_tiny``, 128 px) and a synthetic dataset:
every run-folder file, resume after a simulated kill, variants, user errors (exit 2, one line)."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import time

import pytest
import torch

from sac.cli import main
from sac.modelfile import load_model_file

FAST = ["--backbone", "vit_tiny", "--batch-size", "2", "--crops-per-epoch", "4", "--val-crops", "1",
        "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, make_dataset):
    return make_dataset(tmp_path_factory.mktemp("nuclei") / "toy", n_train=4, n_val=2, size=160)


def _rows(run):
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _no_temp_files(run):
    leftovers = [p.name for p in run.rglob("*") if ".tmp" in p.name or ".old-" in p.name]
    assert leftovers == []


def test_sac_train_writes_complete_run_folder(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(dataset), "--out", str(run), "--epochs", "2", "--points", "4", *FAST]) == 0
    assert '"best_val_dice"' in capsys.readouterr().out  # the summary is printed
    summary = json.loads((run / "summary.json").read_text())
    for name in ("config.json", "splits.json", "metrics.csv", "learning_curve.png", "last.ckpt", "summary.json",
                 "best/model.safetensors", "best/config.json"):
        assert (run / name).is_file(), name
    assert (run / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = _rows(run)
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    for r in rows:
        assert math.isfinite(float(r["train_loss"])) and 0 <= float(r["val_dice"]) <= 1
        assert float(r["epoch_seconds"]) > 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["variant"] == "sac" and cfg["model"]["prompts"]["n_points"] == 4
    assert summary["epochs_run"] == 2
    model = load_model_file(run / "best")  # the self-describing format loads back
    assert model.model_info["extra"]["training"]["variant"] == "sac"
    # the run folder is recorded without the machine's layout: relative to the working directory, or its name
    recorded = model.model_info["extra"]["training"]["run"]
    assert not recorded.startswith("/") and recorded.endswith("run")
    ckpt = torch.load(run / "last.ckpt", weights_only=False, map_location="cpu")
    assert ckpt["global_step"] == 4 and "optimizer_states" in ckpt
    _no_temp_files(run)


def test_killed_run_leaves_complete_files_and_resumes(dataset, tmp_path):
    """SIGKILL a real `sac train` process as soon as its first checkpoint exists, check every file is complete,
    then --resume: the history continues without a lost or repeated epoch."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "sac.cli", "train", "--data", str(dataset), "--out", str(run), "--epochs", "50",
           *FAST]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not (run / "last.ckpt").exists() and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert (run / "last.ckpt").is_file(), "the run never wrote a checkpoint"
    done = [int(r["epoch"]) for r in _rows(run)]  # parses: the CSV is complete
    assert done and done == list(range(len(done)))
    ckpt = torch.load(run / "last.ckpt", weights_only=False, map_location="cpu")
    load_model_file(run / "best")
    start = ckpt["global_step"] // 2  # epochs completed in the checkpoint (2 steps per epoch)
    assert main(["train", "--data", str(dataset), "--out", str(run), "--resume", "--epochs", str(start + 2),
                 *FAST]) == 0
    rows = _rows(run)
    assert [int(r["epoch"]) for r in rows] == list(range(start + 2))
    assert [int(r["step"]) for r in rows] == [2 * (e + 1) for e in range(start + 2)]
    assert torch.load(run / "last.ckpt", weights_only=False)["global_step"] == 2 * (start + 2)
    _no_temp_files(run)


@pytest.mark.slow
def test_stopped_and_resumed_run_ends_with_the_same_weights(dataset, tmp_path):
    """Same seed, same data: 3 epochs in one go, and 1 epoch then --resume to 3, end with identical weights (the
    data order, prompt draws, optimizer and loop state all come back from last.ckpt)."""
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert main(["train", "--data", str(dataset), "--out", str(whole), "--epochs", "3", *FAST]) == 0
    assert main(["train", "--data", str(dataset), "--out", str(parts), "--epochs", "1", *FAST]) == 0
    after_one = torch.load(parts / "last.ckpt", weights_only=False, map_location="cpu")
    assert after_one["global_step"] == 2
    assert main(["train", "--data", str(dataset), "--out", str(parts), "--resume", "--epochs", "3", *FAST]) == 0
    a = torch.load(whole / "last.ckpt", weights_only=False, map_location="cpu")
    b = torch.load(parts / "last.ckpt", weights_only=False, map_location="cpu")
    assert a["global_step"] == b["global_step"] == 6
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for name, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][name]), name
    # training moved the weights after the resume (so the equality above is not that of two untouched models)
    assert any(not torch.equal(t, after_one["state_dict"][n]) for n, t in b["state_dict"].items())
    for key in ("train_loss", "val_dice"):
        assert [r[key] for r in _rows(whole)] == [r[key] for r in _rows(parts)]


def test_existing_run_needs_resume_and_missing_val_is_a_user_error(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(dataset), "--out", str(run), "--epochs", "1", *FAST]) == 0
    capsys.readouterr()
    assert main(["train", "--data", str(dataset), "--out", str(run), "--epochs", "1", *FAST]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--data", str(dataset), "--val-split", "nope", "--out", str(tmp_path / "r2"), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--val-from-train" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r3"), *FAST]) == 2
    assert "missing" in capsys.readouterr().err


def test_val_from_train_and_two_datasets(dataset, tmp_path, make_dataset):
    other = make_dataset(tmp_path / "other", n_train=5, n_val=0, size=140, seed=3)
    run = tmp_path / "run"
    args = ["train", "--data", str(dataset), "--data", f"{other}:train", "--val-from-train", "2", "--val-seed", "1",
            "--out", str(run), "--epochs", "1", "--variant", "sam-ft", "--crop-pool", *FAST]
    assert main(args) == 0
    rec = json.loads((run / "splits.json").read_text())
    val = {v["root"]: v for v in rec["val"]}
    assert val[str(dataset)]["split"] == "val"  # has a val split: used as is
    held = val[str(other)]["ids"]
    assert len(held) == 2 and val[str(other)]["split"] == "train"
    assert [t["n_images"] for t in rec["train"]] == [4, 3]
    info = json.loads((run / "best" / "config.json").read_text())
    assert info["config"]["lora"]["enabled"] is False and info["extra"]["training"]["variant"] == "sam-ft"


def test_mask_prompt_run_trains_and_segments(dataset, tmp_path):
    """--mask-prompt is recorded in the model config, and the saved model segments through the same Segmenter
    as `sac segment` (which must then hand the UNet map to the decoder, or decode raises)."""
    import numpy as np

    from sac.inference.segmenter import Segmenter

    run = tmp_path / "run"
    assert main(["train", "--data", str(dataset), "--out", str(run), "--epochs", "1", "--points", "4",
                 "--mask-prompt", "--crop-pool", *FAST]) == 0
    model = load_model_file(run / "best")
    assert model.cfg.prompts.mask_prompt is True
    image = (np.random.default_rng(0).random((150, 170, 3)) * 255).astype(np.uint8)
    result = Segmenter(model).segment(image)
    assert result.prob.shape == (150, 170) and np.isfinite(result.prob).all()
