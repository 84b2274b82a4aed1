"""A saved model loads as a ModelHandle: checked at once, its torch module built only when something needs it.

With a valid compiled-engine cache entry, `sac segment` never builds the module (no MONAI / timm / torchvision
import): the second load below segments with the handle alone and gives the same labels as the first, which built
it to export.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sac.backbones import build_sac
from sac.errors import SACError
from sac.inference.api import load_model
from sac.inference.config import InferenceConfig
from sac.modelfile import CONFIG_NAME, ModelHandle, save_model
from sac.models.config import SACConfig, UNetConfig


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    torch.manual_seed(0)
    cfg = SACConfig(backbone="vit_tiny", unet=UNetConfig(channels=(8, 16, 32, 64), num_res_units=0,
                                                         distance_head=True))
    return save_model(tmp_path_factory.mktemp("m") / "model", build_sac(cfg, pretrained=False))


@pytest.fixture(scope="module")
def crop():
    import skimage.data

    return skimage.data.immunohistochemistry()[:200, :180]


def test_handle_knows_the_model_without_building_it(folder):
    handle = ModelHandle(folder)
    module = build_sac(handle.cfg, pretrained=False)
    assert not handle.built
    assert handle.input_size == module.input_size and handle.prompt_channels == 2 == module.prompt_channels
    assert handle.cfg == module.cfg and len(handle.identity) == 64
    assert ModelHandle(folder).identity == handle.identity  # stable: the engine cache key
    assert handle.to("cpu") is handle and handle.eval() is handle and not handle.built
    handle.object_decoder  # noqa: B018 -- any module attribute builds the module
    assert handle.built and handle.build() is handle.build()


def test_identity_follows_the_weights(folder, tmp_path):
    torch.manual_seed(1)
    other = save_model(tmp_path / "other", build_sac(ModelHandle(folder).cfg, pretrained=False))
    assert ModelHandle(other).identity != ModelHandle(folder).identity


def test_broken_folder_fails_when_the_handle_is_made(folder, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    meta = json.loads((bad / CONFIG_NAME).read_text())
    meta["weights_sha256"] = "0" * 64
    (bad / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(SACError, match="does not belong"):
        ModelHandle(bad)


def test_cached_engine_segments_without_the_torch_module(folder, crop):
    cfg = InferenceConfig(scale=1.0, engine="openvino")
    first = load_model(folder)
    seg = first.segmenter(cfg)
    assert seg.engine.name == "openvino", seg.engine.note
    labels = seg.segment(crop).labels
    second = load_model(folder)  # the cache entry now exists: nothing needs the module
    again = second.segmenter(cfg).segment(crop)
    assert not second.runnable.built
    np.testing.assert_array_equal(again.labels, labels)
    assert again.n_nuclei > 0 and again.distance is not None
    assert second.module is second.runnable.build() and second.runnable.built  # .module builds on request


def test_editor_builds_the_module_when_it_opens_for_clicks(folder, crop):
    from sac.inference.editor import Editor

    cfg = InferenceConfig(scale=1.0, engine="openvino")
    lazy = load_model(folder)
    Editor(lazy, crop, cfg, embed=False)  # a few expert points: built on the first click, if any
    assert not lazy.runnable.built
    eager = load_model(folder)
    Editor(eager, crop, cfg)  # interactive: the first click must not wait for the build
    assert eager.runnable.built
