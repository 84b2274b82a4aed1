"""`sac segment` end to end: real tissue crops, every output format, batches with bad inputs, `make demo`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
import tifffile

from sac.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained SAC on the test-only tiny ViT backbone (128 px input, small UNet), saved like a real model."""
    from sac.backbones import build_sac
    from sac.modelfile import save_model
    from sac.models.config import SACConfig, UNetConfig

    folder = tmp_path_factory.mktemp("model") / "tiny"
    cfg = SACConfig(backbone="vit_tiny", unet=UNetConfig(channels=(8, 16, 32, 64), num_res_units=0))
    save_model(folder, build_sac(cfg, pretrained=False))
    return folder


@pytest.fixture(scope="module")
def ihc_crop(tmp_path_factory) -> Path:
    """A real IHC tissue crop shipped with scikit-image (the `make demo` image), 300 x 260."""
    import skimage.data

    path = tmp_path_factory.mktemp("img") / "ihc_crop.png"
    iio.imwrite(path, skimage.data.immunohistochemistry()[100:400, 200:460])
    return path


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".") or ".tmp" in p.name]


def test_segment_writes_every_format_consistently(tiny_model, ihc_crop, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["segment", str(ihc_crop), "--out", str(out), "--model", str(tiny_model),
               "--expert-points", "20,30,1;200,250,0"])
    assert rc == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("segmented 1 image(s)") and "nuclei" in summary
    stem = "ihc_crop"
    labels = tifffile.imread(out / f"{stem}_labels.tif")
    assert labels.dtype == np.uint16 and labels.shape == (300, 260)
    n = int(labels.max())
    assert n > 0 and len(np.unique(labels)) == n + 1  # ids 1..n, no gaps
    mask = iio.imread(out / f"{stem}_mask.png")
    np.testing.assert_array_equal(mask == 255, labels > 0)
    table = pd.read_csv(out / f"{stem}_nuclei.csv")
    assert len(table) == n and table["area"].sum() == (labels > 0).sum()
    gj = json.loads((out / f"{stem}.geojson").read_text())
    assert len(gj["features"]) == n
    assert {f["properties"]["objectType"] for f in gj["features"]} == {"detection"}
    overlay = iio.imread(out / f"{stem}_overlay.png")
    assert overlay.shape == (300, 260, 3)
    assert not (out / "summary.csv").exists()  # one input: no summary
    assert _leftovers(out) == []


def test_batch_with_bad_inputs_keeps_going(tiny_model, ihc_crop, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    good = src / "good.png"
    good.write_bytes(ihc_crop.read_bytes())
    (src / "empty.png").write_bytes(b"")
    (src / "text.jpg").write_text("this is not a JPEG")
    (src / "truncated.png").write_bytes(ihc_crop.read_bytes()[:300])
    tifffile.imwrite(src / "gray16.tif", (np.arange(64 * 80).reshape(64, 80) * 9).astype(np.uint16))
    out = tmp_path / "out"
    rc = main(["segment", str(src), str(tmp_path / "missing.png"), "--out", str(out), "--model", str(tiny_model),
               "--formats", "mask,labels,csv"])
    assert rc == 2
    err = capsys.readouterr().err
    for name in ("empty.png", "text.jpg", "truncated.png", "missing.png"):
        lines = [ln for ln in err.splitlines() if ln.startswith("error:") and name in ln]
        assert len(lines) == 1, (name, err)
    produced = sorted(p.name for p in out.iterdir())
    assert produced == sorted(["good_mask.png", "good_labels.tif", "good_nuclei.csv",
                               "gray16_mask.png", "gray16_labels.tif", "gray16_nuclei.csv", "summary.csv"])
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 6
    assert (summary["status"] == "ok").sum() == 2
    assert list(summary.columns) == ["image", "nuclei", "mean_area", "scale", "seconds", "status"]


def test_failure_while_writing_one_image_removes_its_outputs_only(tiny_model, ihc_crop, tmp_path, capsys,
                                                                  monkeypatch):
    """Outputs are written on a second thread while the next image runs: a write error of one image (here its
    GeoJSON, after its mask and labels) is its own one-line error, its files are removed, the others are complete
    and the rows stay in input order."""
    from sac.inference import writers

    src = tmp_path / "in"
    src.mkdir()
    for name in ("a", "b", "c"):
        (src / f"{name}.png").write_bytes(ihc_crop.read_bytes())
    real = writers.write_geojson

    def failing(path, *args, **kwargs):
        if Path(path).name.startswith("b"):
            raise OSError(28, "No space left on device")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(writers, "write_geojson", failing)
    out = tmp_path / "out"
    assert main(["segment", str(src), "--out", str(out), "--model", str(tiny_model), "--scale", "1"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "b.png" in err[0] and "No space left" in err[0]
    produced = sorted(p.name for p in out.iterdir())
    per_image = ["{}.geojson", "{}_labels.tif", "{}_mask.png", "{}_nuclei.csv", "{}_overlay.png"]
    assert produced == sorted([f.format(s) for s in ("a", "c") for f in per_image] + ["summary.csv"])
    summary = pd.read_csv(out / "summary.csv")
    assert [Path(p).name for p in summary["image"]] == ["a.png", "b.png", "c.png"]
    assert list(summary["status"] == "ok") == [True, False, True]
    assert summary["nuclei"][0] == summary["nuclei"][2] > 0


def test_odd_image_files_are_read_or_clear_errors(tiny_model, ihc_crop, tmp_path, capsys):
    """Palette PNG (expanded to RGB) and multi-page TIFF (its first page) are segmented as what they show; a
    corrupt BMP and a 5-channel TIFF are one-line errors; exit code 2 at the end, the good files written."""
    from PIL import Image

    src = tmp_path / "in"
    src.mkdir()
    rgb = iio.imread(ihc_crop)[:128, :128]
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(src / "palette.png")
    tifffile.imwrite(src / "pages.tif", np.stack([rgb, rgb[::-1]]))  # two RGB pages
    iio.imwrite(tmp_path / "ok.bmp", rgb)
    (src / "corrupt.bmp").write_bytes((tmp_path / "ok.bmp").read_bytes()[:200])
    tifffile.imwrite(src / "five.tif", np.zeros((64, 64, 5), np.uint8), photometric="minisblack", planarconfig="contig")
    out = tmp_path / "out"
    rc = main(["segment", str(src), "--out", str(out), "--model", str(tiny_model), "--formats", "labels,overlay"])
    assert rc == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 2
    assert any("corrupt.bmp" in ln and "truncated" in ln for ln in err)
    assert any("five.tif" in ln and "channels 5" in ln for ln in err)
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".csv")) == [
        "pages_labels.tif", "pages_overlay.png", "palette_labels.tif", "palette_overlay.png"]
    assert tifffile.imread(out / "pages_labels.tif").shape == (128, 128)  # one page, not a 2-image stack
    # the overlay is drawn on the image as read: the palette PNG's colours, the TIFF's first page
    from sac.data.io import read_image

    palette_rgb = np.asarray(Image.open(src / "palette.png").convert("RGB"))
    np.testing.assert_array_equal(read_image(src / "palette.png"), palette_rgb)
    np.testing.assert_array_equal(read_image(src / "pages.tif"), rgb)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--expert-points", "1,2,7"], "label 7"),
        (["--expert-points", "1;2"], "bad point"),
        (["--expert-points", "5000,5,1"], "outside"),
        (["--formats", "mask,svg"], "svg"),
        (["--overlap", "300", "--tile", "256"], "--overlap"),
        (["--scale", "0"], "--scale"),
    ],
)
def test_user_mistakes_are_one_line_errors(tiny_model, ihc_crop, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    try:
        rc = main(["segment", str(ihc_crop), "--out", str(out), "--model", str(tiny_model), *args])
    except SystemExit as exc:  # values argparse checks itself (--scale) end at parse time, with the same code 2
        rc = exc.code
    assert rc == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert len(err) == 1 and message in err[0]
    if message == "outside":
        assert "ihc_crop.png" in err[0]
    assert not out.exists() or not any(p.name.startswith("ihc_crop") for p in out.iterdir())


def test_missing_default_model_is_a_clear_error(tmp_path, monkeypatch, ihc_crop, capsys):
    from sac.inference import api

    monkeypatch.setattr(api, "default_model_dir", lambda: tmp_path / "nowhere")
    rc = main(["segment", str(ihc_crop), "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "default model is missing" in err and err.count("\n") == 1


def test_demo_equivalent_with_a_temporary_model(tiny_model, tmp_path, monkeypatch, capsys):
    """What `make demo` runs (the full skimage ihc.png, 512 x 512), with a temporary model as the default."""
    import skimage.data

    from sac.inference import api

    monkeypatch.setattr(api, "default_model_dir", lambda: tiny_model)
    ihc = Path(os.path.dirname(skimage.data.__file__)) / "ihc.png"
    out = tmp_path / "demo_out"
    assert main(["segment", str(ihc), "--out", str(out)]) == 0
    assert "segmented 1 image(s)" in capsys.readouterr().out
    assert len(list(out.glob("ihc*"))) == 5


@pytest.mark.slow
def test_segment_with_real_litemedsam_backbone(tmp_path, ihc_crop, capsys):
    """The real (pretrained, hash-checked) LiteMedSAM backbone with an untrained LoRA/UNet: one padded 256 tile."""
    from sac.backbones import build_sac
    from sac.modelfile import save_model

    model = tmp_path / "lite"
    save_model(model, build_sac())
    crop = tmp_path / "ihc_crop.png"
    iio.imwrite(crop, iio.imread(ihc_crop)[:250, :240])
    out = tmp_path / "out"
    assert main(["segment", str(crop), "--out", str(out), "--model", str(model), "--formats", "labels,csv"]) == 0
    labels = tifffile.imread(out / "ihc_crop_labels.tif")
    assert labels.shape == (250, 240)
    assert len(pd.read_csv(out / "ihc_crop_nuclei.csv")) == labels.max()
