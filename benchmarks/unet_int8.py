"""int8 post-training quantisation of the prompt UNet (OpenVINO NNCF): speed per tile and validation accuracy.

The UNet is the cost of the default automatic pass (docs/segment.md), so issue 13 asked for int8 "only if accuracy
holds". This script quantises the default model's exported UNet graph (the OpenVINO IR in the engine cache, filled
by any `sac segment` call) with ``nncf.quantize`` -- MIXED preset, calibration on 132 random 256 x 256 windows of
training images (3 per MoNuSeg training image outside the 6 held out, 60 DSB train images; seed 0) -- then times one
tile (f32 vs int8, 2 threads) and runs the default settings on the MoNuSeg hold-out and DSB val with the int8 UNet in
place of the cached one (``benchmarks/engine_accuracy.py``'s code path). Variants keep the last two layers, or also
the first, in f32.

    pip install nncf     # not a dependency of sac
    nice -n 5 .venv/bin/python benchmarks/unet_int8.py --out benchmarks/results/unet_int8.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import engine_accuracy as EA  # noqa: E402

LAST_CONV = "/unet/unet/model/model.2/model.2.1/conv/unit0/conv/Conv/WithoutBiases"
FIRST_CONV = "/unet/unet/model/model.0/conv/unit0/conv/Conv/WithoutBiases"
VARIANTS = {"int8": (), "int8_f32_output": ("output",), "int8_f32_output_first": ("output", "first")}


def f32_layers(model, keep: tuple[str, ...]) -> list[str]:
    """Names of the layers ``keep`` leaves in f32: ``output`` = the last transposed convolution (2 channels) and the
    last convolution; ``first`` = the first convolution."""
    names = []
    for op in model.get_ordered_ops():
        kind, name = op.get_type_name(), op.get_friendly_name()
        last_up = kind == "ConvolutionBackpropData" and op.get_output_partial_shape(0)[1].get_length() == 2
        if ("output" in keep and (last_up or name == LAST_CONV)) or ("first" in keep and name == FIRST_CONV):
            names.append(name)
    return names


def calibration(data: Path, seed: int = 0) -> list[np.ndarray]:
    from sac.data.io import list_pairs, read_image

    rng = np.random.default_rng(seed)
    crops = []
    for pid, ip, _ in list_pairs(data / "monuseg", "train"):
        if pid in EA.MONUSEG_VAL:
            continue
        im = read_image(ip)
        for _ in range(3):
            y, x = rng.integers(0, im.shape[0] - 256), rng.integers(0, im.shape[1] - 256)
            crops.append(im[y : y + 256, x : x + 256])
    dsb = list_pairs(data / "dsb2018", "train")
    for k in rng.choice(len(dsb), 60, replace=False):
        im = read_image(dsb[k][1])
        pad = ((0, max(0, 256 - im.shape[0])), (0, max(0, 256 - im.shape[1])), (0, 0))
        im = np.pad(im, pad, mode="reflect")
        y, x = rng.integers(0, im.shape[0] - 255), rng.integers(0, im.shape[1] - 255)
        crops.append(im[y : y + 256, x : x + 256])
    return [np.ascontiguousarray(c.transpose(2, 0, 1)[None].astype(np.float32) / 255) for c in crops]


def tile_seconds(core, model, x: np.ndarray, n: int = 20) -> float:
    c = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 2})
    c([x])
    t = time.perf_counter()
    for _ in range(n):
        c([x])
    return (time.perf_counter() - t) / n


def accuracy_with(unet_xml: str) -> dict:
    """The default settings on both validation sets with ``unet_xml`` as the engine's UNet."""
    import openvino as ov
    import torch

    from sac.inference import engine as E
    from sac.inference.api import load_model

    export, load = E.BACKENDS["openvino"]

    def load_int8(folder, stages, precision):
        runners = load(folder, stages, precision)
        if "unet" in runners:
            c = ov.Core().compile_model(unet_xml, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 2})
            runners["unet"] = E._locked(lambda arrays: [np.array(v) for v in c(arrays).to_tuple()])
        return runners

    E.BACKENDS["openvino"] = (export, load_int8)
    try:
        EA.VARIANTS["default"] = ("openvino", E.ENCODER_PRECISION, {})
        torch.set_num_threads(2)
        loaded = load_model("default")
        return {s: {k: v for k, v in EA.run_variant(loaded, "default", s).items()
                    if k in ("dice", "aji", "pq", "n_images", "seconds_per_image", "loadavg")}
                for s in ("monuseg", "dsb")}
    finally:
        E.BACKENDS["openvino"] = (export, load)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--cache", type=Path, default=None, help="engine cache folder (default: the user cache)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "unet_int8.json")
    args = ap.parse_args()
    import nncf
    import openvino as ov
    from platformdirs import user_cache_dir

    cache = args.cache or Path(os.environ.get("SAC_CACHE_DIR", user_cache_dir("sac"))) / "engines"
    xmls = sorted(cache.glob("openvino-*/unet.xml"), key=lambda p: p.stat().st_mtime)
    if not xmls:
        raise SystemExit(f"no exported UNet in {cache}: run `sac segment` on any image first")
    core = ov.Core()
    data = calibration(EA.DATA)
    result = {"unet_xml": str(xmls[-1]), "calibration_windows": len(data), "nncf": nncf.__version__,
              "openvino": ov.get_version(), "variants": {}}
    result["f32_tile_s"] = round(tile_seconds(core, core.read_model(xmls[-1]), data[0]), 4)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.variants.split(","):
            keep = f32_layers(core.read_model(xmls[-1]), VARIANTS[name])
            t = time.perf_counter()
            q = nncf.quantize(core.read_model(xmls[-1]), nncf.Dataset(data), subset_size=len(data),
                              preset=nncf.QuantizationPreset.MIXED,
                              ignored_scope=nncf.IgnoredScope(names=keep) if keep else None)
            row = {"f32_layers": keep, "quantise_s": round(time.perf_counter() - t, 1)}
            path = str(Path(tmp) / f"{name}.xml")
            ov.save_model(q, path)
            row["int8_tile_s"] = round(tile_seconds(core, core.read_model(path), data[0]), 4)
            row["validation"] = accuracy_with(path)
            result["variants"][name] = row
            print(name, json.dumps(row), flush=True)
    result["f32_validation"] = accuracy_with(str(xmls[-1]))
    result["loadavg_end"] = os.getloadavg()
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
