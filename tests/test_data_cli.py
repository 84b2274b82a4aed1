"""`sac data convert` and `sac data split` through the CLI entry point."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest

from sac.cli import main
from sac.data.io import list_pairs, write_image, write_labels
from sac.data.split import choose_ids


def _dataset(root, n=10, split="train"):
    for k in range(n):
        write_image(root / split / "images" / f"img{k:02d}.png", np.full((4, 4, 3), k, np.uint8))
        write_labels(root / split / "labels" / f"img{k:02d}.png", np.full((4, 4), k, np.int32))


def test_split_moves_files_and_records_json(tmp_path, capsys):
    _dataset(tmp_path)
    assert main(["data", "split", str(tmp_path), "--from", "train", "--to", "val", "--fraction", "0.3",
                 "--seed", "7"]) == 0
    rec = json.loads((tmp_path / "split_val.json").read_text())
    assert rec["seed"] == 7 and rec["fraction"] == 0.3 and rec["mode"] == "move" and len(rec["ids"]) == 3
    val_ids = [p[0] for p in list_pairs(tmp_path, "val")]
    train_ids = [p[0] for p in list_pairs(tmp_path, "train")]
    assert val_ids == rec["ids"]
    assert set(val_ids).isdisjoint(train_ids) and len(train_ids) == 7
    assert "moved 3 of 10" in capsys.readouterr().out


def test_split_is_reproducible_and_seed_dependent(tmp_path):
    ids = [f"id{k}" for k in range(30)]
    assert choose_ids(ids, 0.2, 0) == choose_ids(list(reversed(ids)), 0.2, 0)
    assert choose_ids(ids, 0.2, 0) != choose_ids(ids, 0.2, 1)
    a, b = tmp_path / "a", tmp_path / "b"
    _dataset(a)
    _dataset(b)
    for root in (a, b):
        assert main(["data", "split", str(root), "--fraction", "0.2", "--seed", "3"]) == 0
    assert [p[0] for p in list_pairs(a, "val")] == [p[0] for p in list_pairs(b, "val")]


def test_second_split_into_the_same_target_keeps_the_first_record(tmp_path):
    _dataset(tmp_path)
    assert main(["data", "split", str(tmp_path), "--fraction", "0.2", "--seed", "1"]) == 0
    first = json.loads((tmp_path / "split_val.json").read_text())
    assert main(["data", "split", str(tmp_path), "--fraction", "0.25", "--seed", "2"]) == 0
    rec = json.loads((tmp_path / "split_val.json").read_text())
    assert rec["previous"] == [first] and rec["seed"] == 2 and rec["n_from_before"] == 8
    moved = first["ids"] + rec["ids"]
    assert sorted(moved) == [p[0] for p in list_pairs(tmp_path, "val")] and len(set(moved)) == 4


def test_split_copy_keeps_source(tmp_path):
    _dataset(tmp_path)
    assert main(["data", "split", str(tmp_path), "--fraction", "0.5", "--copy"]) == 0
    assert len(list_pairs(tmp_path, "train")) == 10 and len(list_pairs(tmp_path, "val")) == 5


@pytest.mark.parametrize(
    "extra, message",
    [(["--fraction", "1.5"], "--fraction"), (["--to", "train"], "both 'train'"), (["--from", "nope"], "not found")],
)
def test_split_errors_exit_2(tmp_path, capsys, extra, message):
    _dataset(tmp_path)
    assert main(["data", "split", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err
    assert len(list_pairs(tmp_path, "train")) == 10  # nothing moved


def test_split_refuses_to_overwrite(tmp_path, capsys):
    _dataset(tmp_path)
    _dataset(tmp_path, split="val")  # same ids already in val
    assert main(["data", "split", str(tmp_path), "--fraction", "0.2"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert len(list_pairs(tmp_path, "train")) == 10


def test_convert_cli_dsb_and_bad_input(tmp_path, capsys):
    d = tmp_path / "raw" / "x1"
    (d / "images").mkdir(parents=True)
    (d / "masks").mkdir()
    iio.imwrite(d / "images" / "x1.png", np.zeros((5, 5, 4), np.uint8))
    m = np.zeros((5, 5), np.uint8)
    m[1:3, 1:3] = 255
    iio.imwrite(d / "masks" / "m1.png", m)
    assert main(["data", "convert", "dsb2018", str(tmp_path / "raw"), str(tmp_path / "out"), "--split", "val"]) == 0
    assert "1 images, 1 instances" in capsys.readouterr().out
    assert [p[0] for p in list_pairs(tmp_path / "out", "val")] == ["x1"]
    (d / "images" / "x1.png").write_bytes(b"")
    assert main(["data", "convert", "dsb2018", str(tmp_path / "raw"), str(tmp_path / "out2")]) == 2
    assert "x1.png" in capsys.readouterr().err
    assert list((tmp_path / "out2").iterdir()) == []
    assert main(["data", "convert", "monuseg", str(tmp_path / "missing"), str(tmp_path / "o")]) == 2


def test_convert_to_unwritable_output(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    d = tmp_path / "raw" / "x1"
    (d / "images").mkdir(parents=True)
    (d / "masks").mkdir()
    iio.imwrite(d / "images" / "x1.png", np.zeros((5, 5, 4), np.uint8))
    iio.imwrite(d / "masks" / "m1.png", np.full((5, 5), 255, np.uint8))
    assert main(["data", "convert", "dsb2018", str(tmp_path / "raw"), str(blocker / "out")]) == 2
    assert "cannot write to output folder" in capsys.readouterr().err
