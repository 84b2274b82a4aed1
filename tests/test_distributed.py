"""Block-wise `sac segment` (sac.inference.block / distributed): exactly-once nuclei, Dask workers, kills, resume.

A pyramidal TIFF of real MoNuSeg tissue (384 x 768, mpp 0.25) in 96 px blocks (32 blocks) with a 48 px halo, on
a tiny random model (vit_tiny): what is tested is the ownership and bookkeeping rule, which does not depend on the
model's quality. The reference is the in-process run; the flat-image `sac segment` of the same pixels must give
the same nuclei.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from sac.cli import main
from sac.inference.slide import write_pyramid_tiff

pytestmark = pytest.mark.data
# An untrained model's UNet map is ~0.5 everywhere: thresholded it is one slide-wide component, which the block rule
# drops as a failed prediction. Its SAM mask has nucleus-sized pieces, so the tests run SAM on every window.
BLOCK_ARGS = ["--block", "96", "--halo", "48", "--sam", "all"]
N_BLOCKS = 4 * 8
STEM = "slide"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained SAC on the tiny test ViT that records a 0.25 um/px training resolution."""
    import torch

    from sac.backbones import build_sac
    from sac.modelfile import save_model
    from sac.models.config import SACConfig, UNetConfig

    folder = tmp_path_factory.mktemp("model") / "tiny"
    torch.manual_seed(0)  # random weights, but the same ones whatever ran before (the tests count its nuclei)
    cfg = SACConfig(backbone="vit_tiny", mpp=0.25, unet=UNetConfig(channels=(8, 16, 32, 64), num_res_units=0))
    save_model(folder, build_sac(cfg, pretrained=False))
    return folder


@pytest.fixture(scope="module")
def tissue(data_root) -> np.ndarray:
    folder = data_root / "monuseg" / "train" / "images"
    a, b = (iio.imread(folder / f"{i}.png")[..., :3] for i in ("TCGA-18-5592-01Z-00-DX1", "TCGA-38-6178-01Z-00-DX1"))
    return np.concatenate([a[:384, :384], b[:384, :384]], axis=1)


@pytest.fixture(scope="module")
def slide(tissue, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("slide") / f"{STEM}.tif"
    write_pyramid_tiff(path, tissue, mpp=0.25, tile=128)
    return path


def _segment(slide, model, out, *extra) -> int:
    return main(["segment", str(slide), "--model", str(model), "--out", str(out), *BLOCK_ARGS, *extra])


def _outputs(out: Path) -> dict:
    """Everything a run wrote (timings and run bookkeeping excluded), for equality checks."""
    import zarr

    summary = json.loads((out / f"{STEM}_slide.json").read_text())
    return {
        "labels": zarr.open_group(out / f"{STEM}_labels.zarr", mode="r")["0"][:],
        "csv": (out / f"{STEM}_nuclei.csv").read_bytes(),
        "geojson": (out / f"{STEM}.geojson").read_bytes(),
        "overlay": iio.imread(out / f"{STEM}_overlay.png"),
        "nuclei": summary["nuclei"],
    }


def _assert_same(a: dict, b: dict) -> None:
    np.testing.assert_array_equal(a["labels"], b["labels"])
    for key in ("csv", "geojson", "nuclei"):
        assert a[key] == b[key], key
    np.testing.assert_array_equal(a["overlay"], b["overlay"])


@pytest.fixture(scope="module")
def reference(slide, tiny_model, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ref")
    assert _segment(slide, tiny_model, out) == 0
    assert not (out / ".sac-blocks").exists()  # removed once the outputs are complete
    return _outputs(out)


def _iou_matched(ref: np.ndarray, pred: np.ndarray) -> float:
    """Fraction of ``ref``'s nuclei with a nucleus of ``pred`` at IoU >= 0.5 (unique by that threshold)."""
    sel = (ref > 0) & (pred > 0)
    pairs, inter = np.unique(np.stack([ref[sel], pred[sel]]), axis=1, return_counts=True)
    area_r = np.bincount(ref.ravel())
    area_p = np.bincount(pred.ravel())
    iou = inter / (area_r[pairs[0]] + area_p[pairs[1]] - inter)
    return len(np.unique(pairs[0][iou >= 0.5])) / int(ref.max())


@pytest.mark.slow
def test_blocks_equal_the_flat_image(reference, tissue, tiny_model, tmp_path):
    labels = reference["labels"].astype(np.int64)
    n = reference["nuclei"]
    assert n > 100 and labels.max() == n and len(np.unique(labels)) == n + 1  # ids 1..N, none lost
    flat_png = tmp_path / "flat.png"
    iio.imwrite(flat_png, tissue)
    assert main(["segment", str(flat_png), "--model", str(tiny_model), "--out", str(tmp_path / "flat"),
                 "--formats", "labels", "--sam", "all"]) == 0
    flat = tifffile.imread(tmp_path / "flat" / "flat_labels.tif").astype(np.int64)
    np.testing.assert_array_equal(flat > 0, labels > 0)  # the same maps, hence the same mask, pixel for pixel
    assert _iou_matched(flat, labels) >= 0.99 and _iou_matched(labels, flat) >= 0.99
    inner = (slice(48, -48), slice(48, -48))
    assert len(np.unique(flat[inner])) == len(np.unique(labels[inner]))
    # The tables describe the label image: one row and one feature per nucleus, level-0 coordinates.
    table = np.genfromtxt(reference["csv"].decode().splitlines(), delimiter=",", names=True)
    assert len(table) == n and sorted(table["id"].astype(int)) == list(range(1, n + 1))
    k = int(np.argmax(table["area"]))
    ys, xs = np.nonzero(labels == table["id"][k])
    assert table["area"][k] == len(ys) and abs(table["centroid_x"][k] - xs.mean()) < 1e-3
    features = json.loads(reference["geojson"])["features"]
    assert len(features) == n and {f["properties"]["nucleus_id"] for f in features} == set(range(1, n + 1))


@pytest.mark.slow
def test_two_workers_match_in_process(reference, slide, tiny_model, tmp_path):
    assert _segment(slide, tiny_model, tmp_path, "--workers", "2") == 0
    _assert_same(_outputs(tmp_path), reference)


def _start(slide, model, out, *extra) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "sac.cli", "segment", str(slide), "--model", str(model), "--out", str(out),
           *BLOCK_ARGS, *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, text=True)


def _wait_for_blocks(proc, folder: Path, n: int, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while len(list(folder.glob("block-*.npz"))) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "no block finished in time"
        time.sleep(0.02)


@pytest.mark.slow
def test_worker_killed_mid_run(reference, slide, tiny_model, tmp_path):
    import psutil

    proc = _start(slide, tiny_model, tmp_path, "--workers", "2")
    _wait_for_blocks(proc, tmp_path / ".sac-blocks" / STEM, 2)
    workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
               if any("spawn_main" in part for part in p.cmdline())]
    assert len(workers) == 2 and proc.poll() is None  # killed while the run goes on
    workers[0].kill()  # SIGKILL: its running block is lost; Dask reruns it on the restarted / other worker
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    _assert_same(_outputs(tmp_path), reference)


@pytest.mark.slow
def test_client_killed_then_resume(reference, slide, tiny_model, tmp_path, capsys):
    proc = _start(slide, tiny_model, tmp_path, "--workers", "2")
    blocks = tmp_path / ".sac-blocks" / STEM
    _wait_for_blocks(proc, blocks, 3)
    os.killpg(proc.pid, signal.SIGKILL)  # the client and its worker processes, at once
    proc.wait()
    time.sleep(1)
    done = {int(p.stem.split("-")[1]): p.stat().st_mtime_ns for p in blocks.glob("block-*.npz")}
    assert 3 <= len(done) < N_BLOCKS, "the run was not interrupted mid-way"
    # Nothing that looks like a finished output; only hidden temporaries may remain.
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == []
    assert _segment(slide, tiny_model, tmp_path) == 2  # an unfinished run is not silently discarded
    assert "pass --resume" in capsys.readouterr().err
    assert all(p.stat().st_mtime_ns == done[int(p.stem.split("-")[1])] for p in blocks.glob("block-*.npz"))
    assert _segment(slide, tiny_model, tmp_path, "--resume") == 0
    summary = json.loads((tmp_path / f"{STEM}_slide.json").read_text())
    assert summary["blocks_computed"] == sorted(set(range(N_BLOCKS)) - set(done))  # no block computed twice
    assert summary["blocks_resumed"] == len(done)
    _assert_same(_outputs(tmp_path), reference)
    assert not blocks.exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_user_errors_are_one_line_and_leave_nothing(slide, tissue, tiny_model, tmp_path, capsys):
    bare = tmp_path / "bare.tif"
    write_pyramid_tiff(bare, tissue[:256, :256], mpp=None, levels=2, tile=128)
    junk = tmp_path / "junk.svs"
    junk.write_bytes(b"\x00garbage" * 64)
    cases = [
        ([str(bare)], "records no microns per pixel; pass --mpp"),
        ([str(junk)], "cannot read slide"),
        ([str(slide), "--roi", "5000,0,100,100"], "outside the slide"),
        ([str(slide), "--scheduler", f"tcp://127.0.0.1:{_free_port()}"], "cannot connect"),
    ]
    for args, message in cases:
        out = tmp_path / "out"
        rc = main(["segment", *args, "--model", str(tiny_model), "--out", str(out), *BLOCK_ARGS])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2, args
        assert len([line for line in err if line.startswith("error:")]) == 1 and message in err[-1], err
        assert not out.exists() or list(out.rglob("*")) == [], list(out.rglob("*"))
