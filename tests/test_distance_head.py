"""The distance head (beyond the paper): its training target, its initialisation from a 1-channel UNet, the
watershed that follows it, the Segmenter's stitched map, and a ``--distance-head --freeze-sam`` training run."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sac.backbones import build_sac
from sac.cli import main
from sac.data.targets import distance_target
from sac.modelfile import load_model_file
from sac.models.config import SACConfig, UNetConfig
from sac.postprocess.instances import make_instances, watershed_instances
from sac.training.run import load_init_weights, replicate_channels

FAST = ["--backbone", "vit_tiny", "--batch-size", "2", "--crops-per-epoch", "4", "--val-crops", "1",
        "--threads", "1", "--no-progress"]


def two_touching_squares() -> np.ndarray:
    labels = np.zeros((20, 30), np.int32)
    labels[5:15, 3:13] = 1  # 10 x 10
    labels[5:15, 13:27] = 2  # 10 x 14, sharing a border with nucleus 1
    return labels


def test_distance_target_peaks_at_one_per_nucleus_and_falls_to_the_shared_border():
    labels = two_touching_squares()
    d = distance_target(labels)
    assert d.dtype == np.float32 and d.shape == labels.shape
    assert (d[labels == 0] == 0).all() and (d[labels > 0] > 0).all()
    for i in (1, 2):
        assert d[labels == i].max() == pytest.approx(1.0)
    # The shared border is an edge of both nuclei: the outermost ring, like any other border pixel.
    ring = 1 / 5  # distance 1 over a peak of 5 px (half of the 10 px side)
    assert d[10, 12] == pytest.approx(ring) and d[10, 13] == pytest.approx(ring)
    # A nucleus cut by the crop border gets a border there (the crop shows no more of it).
    cut = np.zeros((8, 8), np.int32)
    cut[:, :4] = 1
    assert distance_target(cut)[:, 0].max() == pytest.approx(0.5)


def test_replicate_channels_keeps_channel_zero_and_copies_it():
    torch.manual_seed(0)
    one = build_sac(SACConfig(backbone="vit_tiny"), pretrained=False).prompt_generator
    two = build_sac(SACConfig(backbone="vit_tiny", unet=UNetConfig(distance_head=True)),
                    pretrained=False).prompt_generator
    assert replicate_channels(torch.ones(3, 1), (3, 2)).tolist() == [[1, 1]] * 3
    assert replicate_channels(torch.ones(1, 1), (2, 2)).tolist() == [[1, 0], [0, 1]]
    assert replicate_channels(torch.ones(2, 3), (4, 3)) is None  # not a size-1 dimension
    grown = {}
    for k, v in one.state_dict().items():
        target = two.state_dict()[k]
        grown[k] = v if v.shape == target.shape else replicate_channels(v, tuple(target.shape))
    two.load_state_dict(grown)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        a, b = one.eval()(x), two.eval()(x)
    assert b.shape == (2, 2, 64, 64)
    torch.testing.assert_close(b[:, :1], a)
    torch.testing.assert_close(b[:, 1:], a)


def test_init_from_a_model_without_distance_head(tmp_path):
    torch.manual_seed(0)
    src = build_sac(SACConfig(backbone="vit_tiny"), pretrained=False)
    (tmp_path / "m").mkdir()
    save_file(src.trained_state_dict(), str(tmp_path / "m" / "model.safetensors"))
    dst = build_sac(SACConfig(backbone="vit_tiny", unet=UNetConfig(distance_head=True)), pretrained=False)
    assert load_init_weights(dst, tmp_path / "m") == len(src.trained_state_dict())
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        fg, dist = dst.eval().prompt_maps(x)
        torch.testing.assert_close(fg, src.eval().prompt_logits(x))
    assert dist.shape == fg.shape


def _cone_map(labels: np.ndarray) -> np.ndarray:
    """A perfect distance head: the target itself."""
    return distance_target(labels)


def test_watershed_follows_the_distance_map():
    # Two half-disc nuclei touching along a diameter: the mask is a disc, so its own distance transform has a
    # single maximum (one nucleus); the learned map (here: the exact target of each nucleus) has two.
    yy, xx = np.mgrid[:40, :60]
    disc = (yy - 20) ** 2 + (xx - 30) ** 2 <= 144
    labels = np.where(disc, np.where(xx < 30, 1, 2), 0).astype(np.int32)
    mask = labels > 0
    assert watershed_instances(mask, min_area=1).max() == 1
    split = watershed_instances(mask, min_area=1, distance=_cone_map(labels))
    assert split.max() == 2
    for i in (1, 2):  # each predicted nucleus is one of the true ones, up to the watershed line
        best = np.bincount(labels[split == i]).max() / (split == i).sum()
        assert best > 0.95
    with pytest.raises(ValueError, match="distance"):
        watershed_instances(mask, distance=np.zeros((3, 3), np.float32))


def test_blockwise_slices_the_distance_map(same_nuclei, touching_disks):
    mask = touching_disks(700, 650, 900, 4, 9, seed=3)
    # A smooth stand-in for a learned map: the normalised distance transform of each connected component.
    from scipy import ndimage as ndi

    comp, _ = ndi.label(mask)
    dist = distance_target(comp)
    single = make_instances(mask, "watershed", min_area=5, distance=dist)
    blocks = make_instances(mask, "watershed", min_area=5, distance=dist, block=256, halo=64, blockwise_above=0)
    same_nuclei(single, blocks, max_changed=0.01)  # flood ties at borders, as for prob


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, make_dataset):
    return make_dataset(tmp_path_factory.mktemp("nuclei") / "toy", n_train=4, n_val=2, size=160)


def test_freeze_sam_distance_head_run_trains_only_the_unet_and_segments(dataset, tmp_path, monkeypatch):
    from sac.inference.config import InferenceConfig
    from sac.inference.segmenter import Segmenter

    first, run = tmp_path / "first", tmp_path / "dh"
    assert main(["train", "--data", str(dataset), "--out", str(first), "--epochs", "1", "--points", "4",
                 "--mask-prompt", *FAST]) == 0
    assert main(["train", "--data", str(dataset), "--out", str(run), "--epochs", "2", "--points", "4",
                 "--mask-prompt", "--distance-head", "--freeze-sam", "--monitor", "aji",
                 "--init-from", str(first / "best"), *FAST]) == 0
    with open(run / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        assert 0 <= float(r["val_aji"]) <= 1 and float(r["train_distance_loss"]) > 0
        assert float(r["train_mask_loss"]) == 0  # no SAM forward in training steps
    before, after = load_model_file(first / "best"), load_model_file(run / "best")
    assert after.cfg.unet.distance_head and after.model_info["extra"]["training"].get("val/aji") is not None
    # the saved model holds everything the first one held (its decoder and LoRA, unchanged), plus the new UNet
    assert set(after.trained_state_dict()) == set(before.trained_state_dict())
    b, a = before.state_dict(), after.state_dict()
    changed = {k for k in b if k in a and a[k].shape == b[k].shape and not torch.equal(a[k], b[k])}
    assert changed and all(k.startswith("prompt_generator.") for k in changed)
    image = (np.random.default_rng(0).random((150, 170, 3)) * 255).astype(np.uint8)
    import sac.inference.segmenter as segmenter_module

    seen = []
    real = segmenter_module.make_instances
    monkeypatch.setattr(segmenter_module, "make_instances",
                        lambda *a, **kw: seen.append(kw.get("distance")) or real(*a, **kw))
    result = Segmenter(after).segment(image)
    assert result.distance.shape == (150, 170) and 0 <= result.distance.min() <= result.distance.max() <= 1
    assert seen[-1] is not None and np.array_equal(seen[-1], result.distance)  # the watershed follows it
    Segmenter(after, InferenceConfig(use_distance=False)).segment(image)
    assert seen[-1] is None
    assert Segmenter(before).segment(image).distance is None and seen[-1] is None


def test_freeze_sam_and_monitor_errors(dataset, tmp_path, capsys):
    assert main(["train", "--data", str(dataset), "--out", str(tmp_path / "r"), "--variant", "unet",
                 "--freeze-sam", *FAST]) == 2
    assert "--freeze-sam applies to --variant sac only" in capsys.readouterr().err
