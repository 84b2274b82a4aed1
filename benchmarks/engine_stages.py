"""Per-stage speed and agreement of each inference engine on one tile of the default model.

For torch, ONNX Runtime, OpenVINO f32 and OpenVINO bf16 (encoder; UNet and decoder stay f32): seconds per call
(median of ``--repeats`` after one warm-up) of the UNet (both heads), the image encoder and the automatic decoder
(the model's own prompts) on :func:`sac.inference.export.reference_tile`, the max abs difference of each output
to torch, the share of mask pixels (logit > 0) that agree with torch end to end, and the first (exporting) and
second (cached) ``make_engine`` time. 2 torch / runtime threads.

    nice -n 10 .venv/bin/python benchmarks/engine_stages.py [--out benchmarks/results/engine_stages.json]

Timings are taken on a shared 2-core machine: the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = (("torch", "f32"), ("onnxruntime", "f32"), ("openvino", "f32"), ("openvino", "bf16"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "engine_stages.json")
    args = ap.parse_args()
    import numpy as np
    import torch

    from sac.inference.api import load_model
    from sac.inference.engine import Engine, make_engine
    from sac.inference.export import reference_tile

    torch.set_num_threads(2)
    model = load_model("default").module
    x = reference_tile(model.input_size)
    ref = Engine(model)
    ref_logits, ref_dist = ref.prompt_maps(x)
    ref_emb = ref.encode(x)
    coords, labels = model.select_prompts(ref_logits, batch_size=1, rng=np.random.default_rng(0))
    ref_mask, _ = ref.decode(ref_emb, coords, labels, ref_logits)
    results = {"points": int((labels >= 0).sum()), "tile": model.input_size}
    with tempfile.TemporaryDirectory() as cache:
        os.environ["SAC_CACHE_DIR"] = cache
        for name, precision in VARIANTS:
            t = time.perf_counter()
            engine = make_engine(model, name, precision=precision)
            cold = time.perf_counter() - t
            t = time.perf_counter()
            engine = make_engine(model, name, precision=precision)
            warm = time.perf_counter() - t
            calls = {"unet": lambda e=engine: e.prompt_maps(x), "encoder": lambda e=engine: e.encode(x),
                     "decoder": lambda e=engine: e.decode(ref_emb, coords, labels, ref_logits)}
            row = {"engine": engine.name, "precision": precision, "make_engine_first_s": round(cold, 1),
                   "make_engine_cached_s": round(warm, 1)}
            for stage, call in calls.items():
                call()
                times = []
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    call()
                    times.append(time.perf_counter() - t)
                row[f"{stage}_s"] = round(statistics.median(times), 4)
            logits, dist = engine.prompt_maps(x)
            emb = engine.encode(x)
            mask, _ = engine.decode(emb, coords, labels, logits)
            row["max_abs_diff"] = {"unet": float((logits - ref_logits).abs().max()),
                                   "encoder": float((emb - ref_emb).abs().max()),
                                   "decoder_same_inputs": float((engine.decode(ref_emb, coords, labels, ref_logits)[0]
                                                                 - ref_mask).abs().max())}
            row["mask_agreement_end_to_end"] = float(((mask > 0) == (ref_mask > 0)).float().mean())
            row["loadavg"] = os.getloadavg()
            results[f"{name}_{precision}"] = row
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
