"""Inference engines (sac.inference.engine): compiled runtimes match torch on a real tile, the export cache is reused
and rebuilt when damaged, and a missing runtime is a one-line error."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from sac.errors import SACError
from sac.inference import engine as E
from sac.inference import engine_cache
from sac.inference.config import InferenceConfig
from sac.inference.export import reference_tile
from sac.inference.segmenter import Segmenter

COMPILED = ("openvino", "onnxruntime")


def _installed(name: str) -> bool:
    try:
        E.runtime(name)
        return name != "onnxruntime" or E.runtime("onnx") is not None
    except SACError:
        return False


def _need(name: str) -> None:
    if not _installed(name):
        pytest.skip(f"{name} is not installed (pip install {E.PACKAGES[name]})")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh, empty cache for this test only (the others share the session's, see conftest)."""
    monkeypatch.setenv(engine_cache.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tiny():
    from sac.backbones import build_sac
    from sac.models.config import SACConfig

    torch.manual_seed(0)
    return build_sac(SACConfig(backbone="vit_tiny"), pretrained=False).eval()


def _entry(cache, name):
    (folder,) = (cache / "engines").glob(f"{name}-*")
    return folder


@pytest.fixture(params=["f32", "bf16"])
def precision(request, monkeypatch):
    """OpenVINO's encoder and UNet precision for one test: f32 (exact up to rounding) or bf16 (the shipped one)."""
    monkeypatch.setattr(E, "ENCODER_PRECISION", request.param)
    monkeypatch.setattr(E, "UNET_PRECISION", request.param)
    return request.param


@pytest.mark.parametrize("name,precision", [("openvino", "f32"), ("openvino", "bf16"), ("onnxruntime", "f32")])
def test_engine_matches_torch_on_real_tile(tiny, name, precision, monkeypatch):
    _need(name)
    monkeypatch.setattr(E, "ENCODER_PRECISION", precision)  # only OpenVINO runs a stage in bf16
    monkeypatch.setattr(E, "UNET_PRECISION", precision)
    engine = E.make_engine(tiny, name)
    assert engine.name == name  # the export check passed: no fallback
    ref = E.Engine(tiny)
    x = torch.cat([reference_tile(tiny.input_size), reference_tile(tiny.input_size).flip(-1)])  # batch of 2
    tol = E.TOLERANCE[precision]
    for a, b in zip(engine.prompt_maps(x), ref.prompt_maps(x), strict=True):
        if b is None:  # no distance head
            assert a is None
            continue
        assert a.dtype == torch.float32 and a.shape == b.shape
        assert float((a - b).abs().max()) <= tol * max(1.0, float(b.abs().max()))
    emb, emb_ref = engine.encode(x), ref.encode(x)
    assert emb.shape == emb_ref.shape
    assert float((emb - emb_ref).abs().max()) <= E.TOLERANCE[E.ENCODER_PRECISION] * max(1.0, float(emb_ref.abs().max()))
    logits = ref.prompt_maps(x)[0]
    coords, labels = tiny.select_prompts(logits, batch_size=2, rng=np.random.default_rng(0))
    tol = E.TOLERANCE["f32"]  # the decoder always runs f32
    for n in (1, coords.shape[1]):  # the number of points is a dynamic axis
        m, iou = engine.decode(emb_ref, coords[:, :n], labels[:, :n], logits)
        m_ref, iou_ref = ref.decode(emb_ref, coords[:, :n], labels[:, :n], logits)
        assert m.shape == m_ref.shape == (2, 1, tiny.input_size, tiny.input_size)
        assert float((m - m_ref).abs().max()) <= tol * max(1.0, float(m_ref.abs().max()))
        assert float((iou - iou_ref).abs().max()) <= tol


def test_segmenter_engines_agree_on_real_crop(tiny, precision):
    import skimage.data

    image = skimage.data.immunohistochemistry()[100:340, 50:330]  # 240 x 280: 4 tiles of 128 px
    base = Segmenter(tiny, InferenceConfig(engine="torch", sam="all")).segment(image, keep_embeddings=True)
    assert base.settings["engine"] == "torch" and len(base.embeddings) == base.tiles
    for name in COMPILED:
        if not _installed(name):
            continue
        res = Segmenter(tiny, InferenceConfig(engine=name, sam="all")).segment(image, keep_embeddings=True)
        assert res.settings["engine"] == name
        bf16 = name == "openvino" and precision == "bf16"
        assert np.abs(res.prob - base.prob).max() < (0.05 if bf16 else 1e-3)
        assert set(res.embeddings) == set(base.embeddings)
        tile = next(iter(base.embeddings))
        assert res.embeddings[tile].dtype == torch.float16
        atol = 0.1 * max(1.0, float(base.embeddings[tile].float().abs().max())) if bf16 else 2e-3
        assert torch.allclose(res.embeddings[tile].float(), base.embeddings[tile].float(), atol=atol)
        # the default path (sam="prompts"): the UNet's map, which bf16 moves by less than its tolerance too
        unet = Segmenter(tiny, InferenceConfig(engine=name)).segment(image).prob
        unet_ref = Segmenter(tiny, InferenceConfig(engine="torch")).segment(image).prob
        assert np.abs(unet - unet_ref).max() < (0.05 if bf16 else 1e-3)


def test_cache_reused_then_rebuilt_when_truncated(tiny, cache):
    _need("openvino")  # a fresh cache: in the session's, earlier tests leave entries of other models beside this one
    E.make_engine(tiny, "openvino")
    exported = engine_cache.EXPORTS["openvino"]
    E.make_engine(tiny, "openvino")
    assert engine_cache.EXPORTS["openvino"] == exported  # second call: loaded from the cache
    weights = _entry(cache, "openvino") / "encoder.bin"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncate
    engine = E.make_engine(tiny, "openvino")
    assert engine_cache.EXPORTS["openvino"] == exported + 1  # damaged entry detected and exported again
    assert engine.name == "openvino"
    assert engine_cache.load_entry(_entry(cache, "openvino")) is not None


def test_failed_check_falls_back_to_torch_with_warning(tiny, monkeypatch, cache):
    _need("onnxruntime")
    monkeypatch.setattr(E, "MASK_AGREEMENT", 1.01)  # impossible: every compiled engine must fail its check
    with pytest.warns(RuntimeWarning, match="differs from torch"):
        engine = E.make_engine(tiny, "onnxruntime")
    assert engine.name == "torch" and "onnxruntime" in engine.note


@pytest.mark.parametrize("name", COMPILED)
def test_missing_runtime_is_one_line_error(tiny, name, monkeypatch):
    monkeypatch.setitem(sys.modules, name, None)  # import now raises ImportError
    with pytest.raises(SACError, match=f"pip install {name}") as err:
        E.make_engine(tiny, name)
    assert "\n" not in str(err.value)


def test_auto_skips_missing_runtime_and_cuda_uses_torch(tiny, monkeypatch):
    _need("onnxruntime")
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert E.make_engine(tiny, "auto").name == "onnxruntime"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert E.make_engine(tiny, "auto").name == "torch"
    with pytest.raises(SACError, match="--engine must be one of"):
        E.make_engine(tiny, "tensorrt")


def test_cli_engine_not_installed(tmp_path, monkeypatch, capsys):
    from sac.cli import main

    monkeypatch.setitem(sys.modules, "openvino", None)
    image = tmp_path / "im.png"
    import imageio.v3 as iio
    import skimage.data

    iio.imwrite(image, skimage.data.immunohistochemistry()[:64, :64])
    code = main(["segment", str(image), "--out", str(tmp_path / "out"), "--engine", "openvino"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1] == "error: --engine openvino: the openvino runtime is not installed (pip install openvino)"
    assert not (tmp_path / "out" / "im_labels.tif").exists()


def test_segmenter_scale_and_geometry(tiny):
    seg = Segmenter(tiny, InferenceConfig(engine="torch", scale=0.5))
    assert seg.scale_for(np.zeros((10, 10, 3), np.uint8)) == 0.5
    assert seg.window() == seg.window(0.5) == (256, 32)
    assert seg.window(1.0) == (128, 16)
    assert len(seg.tiles_for(500, 500, 1.0)) > len(seg.tiles_for(500, 500))


@pytest.mark.slow
def test_openvino_without_onnx_package_uses_torch_export(tiny, monkeypatch, cache):
    _need("openvino")
    monkeypatch.setitem(sys.modules, "onnx", None)
    engine = E.make_engine(tiny, "openvino")
    assert engine.name == "openvino"
    x = reference_tile(tiny.input_size)
    ref = E.Engine(tiny).encode(x)
    tol = E.TOLERANCE[E.ENCODER_PRECISION]
    assert float((engine.encode(x) - ref).abs().max()) <= tol * max(1.0, float(ref.abs().max()))


class ChannelSAC(torch.nn.Module):
    """Stand-in SAC: the UNet's nucleus probability is the green channel, SAM's mask probability the red one; counts
    the tiles SAM decodes."""

    def __init__(self, input_size: int = 64):
        super().__init__()
        from sac.models.config import SACConfig

        self.cfg = SACConfig()
        self.input_size = input_size
        self.image_encoder = torch.nn.Identity()
        self.prompt_generator = torch.nn.Identity()
        self.prompt_generator.out_channels = 1
        self.prompt_channels = 1
        self.decoded = 0

    def prompt_maps(self, images):
        return torch.logit(images[:, 1:2].clamp(1e-4, 1 - 1e-4)), None

    def normalise(self, images):
        return images

    def decode(self, emb, coords, labels, mask_prompt=None):
        self.decoded += len(emb)
        return torch.logit(emb[:, :1].clamp(1e-4, 1 - 1e-4)), torch.zeros(len(emb), 1)


@pytest.mark.parametrize("sam,frac,expected_sam", [("all", 0.2, 9), ("uncertain", 0.0, 4), ("uncertain", 0.5, 0),
                                                    ("prompts", 0.0, 0)])
def test_sam_only_where_it_pays(sam, frac, expected_sam):
    image = np.zeros((160, 160, 3), np.uint8)
    image[..., 0] = 200  # SAM would say nucleus everywhere
    image[50:62, 50:62, 1] = 255  # one UNet nucleus, in the four top-left windows (3 x 3 windows of 64 px)
    image[53:59, 53:59, 1] = 128  # with an uncertain core (p = 0.5): 36 px, far below half of a window
    model = ChannelSAC()
    seg = Segmenter(model, InferenceConfig(engine="torch", scale=1.0, overlap=16, sam=sam, sam_uncertain=frac,
                                           n_points=1, tta=1))
    assert len(seg.tiles_for(160, 160)) == 9
    res = seg.segment(image, keep_embeddings=True)
    assert model.decoded == expected_sam == seg.windows_run[1] and seg.windows_run[0] == 9
    assert len(res.embeddings) == expected_sam
    if sam == "prompts":  # the encoder alone on every window (the editor's cache); the decoder still nowhere
        res = seg.segment(image, keep_embeddings=True, embed_all=True)
        assert len(res.embeddings) == 9 and model.decoded == 0
    far = res.prob[120:, 120:]  # covered only by windows without a nucleus
    if sam == "all":
        assert np.allclose(far, 200 / 255, atol=1e-3)  # SAM's answer
    else:
        assert far.max() < 0.01  # the UNet's (green = 0): SAM was skipped there
        assert not res.mask[120:, 120:].any()


def test_onnxruntime_without_onnx_package_is_one_line_error(tiny, monkeypatch, cache):
    _need("onnxruntime")
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(SACError, match=r"exporting needs the onnx package \(pip install onnx\)"):
        E.make_engine(tiny, "onnxruntime")
    assert not list((cache / "engines").iterdir())  # no half-made entry left
