"""Inference engines: the same SAC model calls run by torch, OpenVINO or ONNX Runtime.

``make_engine(model, name, device)`` returns an :class:`Engine` with the four model calls of whole-image inference
(``prompt_maps``, ``encode``, ``decode``, ``decode_object``); all take and return tensors as the :class:`SAC`
methods of the same name, outputs are CPU ``float32``. The torch engine calls the module (the encoder as the
inference copy of :mod:`sac.inference.encoder`). The compiled engines run the graphs of :mod:`sac.inference.export`
(encoder with LoRA merged, UNet with both heads, prompt encoder + automatic mask decoder with a dynamic number of
points), exported once per model and runtime version and cached (:mod:`sac.inference.engine_cache`).

At export each compiled engine is checked against torch on a real tile (:func:`sac.inference.export.reference_tile`):
every stage's output must be within :data:`TOLERANCE` of torch's (max abs difference over max(1, max |torch|)) and
the final mask must agree on at least :data:`MASK_AGREEMENT` of the pixels; otherwise the engine falls back to torch
with a one-line warning (the failed check is cached too, so it is not redone every run). ``decode_object`` (the
interactive head) and ``refine_object`` (the click refiner) run in torch in every engine: they are called once per
click, on one tile.

``auto`` picks the first of :data:`AUTO_ORDER` that is installed and passes the check (measured speeds in
docs/engines.md); ``device`` cuda always runs torch.
"""

from __future__ import annotations

import importlib
import shutil
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sac.errors import SACError
from sac.inference import engine_cache
from sac.inference.config import ENGINE_CHOICES
from sac.inference.export import DecoderGraph, EncoderGraph, UNetGraph, prepare_mask_prompt, reference_tile
from sac.modelfile import ModelHandle
from sac.models.sac import SAC

ENGINES = tuple(c for c in ENGINE_CHOICES if c != "auto")
AUTO_ORDER = ("openvino", "onnxruntime", "torch")  # fastest first (docs/engines.md)
PACKAGES = {"openvino": "openvino", "onnxruntime": "onnxruntime onnx"}  # what to pip install for each runtime
# Version of the exported graphs: bump when export.py changes so old cache entries are not reused.
EXPORT_VERSION = 1
# OpenVINO inference precision of the image encoder (the decoders always run f32: they are cheap). bf16 halves the
# encoder's time per window on CPUs with AMX / AVX512-BF16 and scored as f32 with SAM on every window (MoNuSeg
# hold-out and DSB val within 0.0004 Dice / AJI, docs/engines.md); elsewhere OpenVINO computes in f32. The export
# check (TOLERANCE, MASK_AGREEMENT) still guards each machine.
ENCODER_PRECISION = "bf16"
# The UNet (whose map is the automatic result) in bf16 too: 2.2x faster per tile here, and the default settings scored
# as with f32 (MoNuSeg hold-out and DSB val within 0.0007 Dice / AJI, docs/engines.md).
UNET_PRECISION = "bf16"
TOLERANCE = {"f32": 1e-3, "bf16": 0.1}
MASK_AGREEMENT = 0.995


class Engine:
    """Model calls of whole-image inference, on torch. Subclasses replace the graph runners."""

    name = "torch"

    def __init__(self, model, device: torch.device | str = "cpu", fast_encoder: bool = True):
        from sac.inference.encoder import inference_encoder

        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.input_size = int(model.input_size)
        self.mask_prompt = bool(model.cfg.prompts.mask_prompt)
        self.encoder = inference_encoder(model.image_encoder) if fast_encoder else None
        self.note = ""  # why a requested engine fell back to this one ("" = it did not)

    @torch.inference_mode()
    def prompt_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """UNet ``[b,3,S,S]`` in [0,1] -> (logits ``[b,1,S,S]``, distance logits ``[b,1,S,S]`` or None)."""
        logits, dist = self.model.prompt_maps(images.to(self.device))
        return _cpu(logits), None if dist is None else _cpu(dist)

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Image encoder (LoRA merged): ``[b,3,S,S]`` in [0,1] -> ``float32 [b,256,h,w]``."""
        images = images.to(self.device)
        if self.encoder is None:
            return _cpu(self.model.encode(images))
        return _cpu(self.encoder(self.model.normalise(images).contiguous(memory_format=torch.channels_last)))

    @torch.inference_mode()
    def decode(self, emb, coords, labels, mask_prompt=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Automatic head, as :meth:`SAC.decode` -> (mask logits ``[b*k,1,S,S]``, iou ``[b*k,1]``)."""
        d = self.device
        masks, iou = self.model.decode(emb.to(d), coords.to(d), labels.to(d),
                                       None if mask_prompt is None else mask_prompt.to(d))
        return _cpu(masks), _cpu(iou)

    @torch.inference_mode()
    def decode_object(self, emb, coords, labels, boxes=None, mask_input=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Interactive head, as ``SAC.decode_object`` (torch in every engine: one call per click)."""
        d = self.device
        masks, iou = self.model.decode_object(emb.to(d), None if coords is None else coords.to(d),
                                              None if labels is None else labels.to(d),
                                              boxes=None if boxes is None else boxes.to(d),
                                              mask_input=None if mask_input is None else mask_input.to(d))
        return _cpu(masks), _cpu(iou)

    @property
    def has_refiner(self) -> bool:
        """Whether the model has a click refiner (``SAC.refiner``)."""
        return getattr(self.model, "refiner", None) is not None

    @torch.inference_mode()
    def refine_object(self, image, logits, unet, clicks) -> torch.Tensor:
        """Click refiner on one crop, as :meth:`ClickRefiner.refine <sac.models.refiner.ClickRefiner.refine>`
        (torch in every engine, like :meth:`decode_object`) -> refined logits ``float32 [h, w]``."""
        d = self.device
        return _cpu(self.model.refiner.refine(image.to(d), logits.to(d), None if unet is None else unet.to(d), clicks))


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().float().cpu()


class CompiledEngine(Engine):
    """Encoder, UNet and automatic decoder run by a compiled runtime, one image (or prompt set) per call: the graphs
    have a fixed batch of 1 (TinyViT's attention reshapes fix the batch at export), a dynamic number of points."""

    def __init__(self, model, runners: dict, name: str):
        super().__init__(model, "cpu", fast_encoder=False)
        self.name = name
        self.runners = runners  # "encoder" | "unet" | "decoder" -> callable(list[np.ndarray]) -> list[np.ndarray]

    def _rows(self, stage: str, *arrays: torch.Tensor) -> list[torch.Tensor]:
        run = self.runners[stage]
        outs = [run([np.ascontiguousarray(a[i : i + 1].detach().float().cpu().numpy()) for a in arrays])
                for i in range(arrays[0].shape[0])]
        return [torch.from_numpy(np.concatenate([o[j] for o in outs])) for j in range(len(outs[0]))]

    def prompt_maps(self, images):
        if self.runners.get("unet") is None:
            raise RuntimeError("this SAC has no prompt generator (cfg.prompts.enabled is False)")
        (out,) = self._rows("unet", images)
        return out[:, :1], (out[:, 1:2] if out.shape[1] > 1 else None)

    def encode(self, images):
        return self._rows("encoder", images)[0]

    def decode(self, emb, coords, labels, mask_prompt=None):
        b, k = emb.shape[0], coords.shape[0] // max(emb.shape[0], 1)
        if coords.ndim != 3 or coords.shape[0] != b * k or labels.shape != coords.shape[:2]:
            shapes = f"emb {tuple(emb.shape)}, coords {tuple(coords.shape)}, labels {tuple(labels.shape)}"
            raise ValueError(f"decode needs coords [B*K,N,2] and labels [B*K,N] for emb [B,...]; got {shapes}")
        src = emb.repeat_interleave(k, dim=0) if k > 1 else emb
        inputs = [src, coords.float(), labels.float()]
        if self.mask_prompt:
            if mask_prompt is None or mask_prompt.shape[0] != b:
                got = None if mask_prompt is None else tuple(mask_prompt.shape)
                raise ValueError(f"this model takes a mask prompt [B,1,S,S] with B = {b}; got {got}")
            inputs.append(prepare_mask_prompt(self.model, mask_prompt.cpu(), k))
        low_res, iou = self._rows("decoder", *inputs)
        if low_res.shape[-1] != self.input_size:
            low_res = F.interpolate(low_res, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)
        return low_res, iou


# ---------------------------------------------------------------------------------------------- export + runtimes
def runtime(name: str, engine: str | None = None):
    """Import package ``name`` (a runtime, or what exporting for ``engine`` needs); SACError naming what to pip
    install when it is missing."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        what = f"the {name} runtime is not installed" if engine is None else f"exporting needs the {name} package"
        raise SACError(f"--engine {engine or name}: {what} (pip install {PACKAGES.get(name, name)})") from e


def _graph_inputs(model) -> dict:
    """Example inputs (the reference tile, its torch embedding and prompts) for export and for the check."""
    x = reference_tile(model.input_size)
    torch_engine = Engine(model, "cpu")
    emb = torch_engine.encode(x)
    logits = torch_engine.prompt_maps(x)[0] if model.prompt_generator is not None else None
    coords, labels = model.select_prompts(logits, batch_size=1, rng=np.random.default_rng(0))
    if coords.shape[1] < 2:  # at least two points so the exported point axis is not specialised to 1
        coords, labels = coords.repeat(1, 2, 1), labels.repeat(1, 2)
    dec = [emb, coords.float(), labels.float()]
    if model.cfg.prompts.mask_prompt:
        dec.append(prepare_mask_prompt(model, logits, 1))
    return {"x": x, "decoder": dec, "logits": logits, "torch": torch_engine}


def _graphs(model, ex: dict) -> dict:
    graphs = {"encoder": (EncoderGraph(model).eval(), (ex["x"],)),
              "decoder": (DecoderGraph(model).eval(), tuple(ex["decoder"]))}
    if model.prompt_generator is not None:
        graphs["unet"] = (UNetGraph(model).eval(), (ex["x"],))
    return graphs


def _export_openvino(model, ex: dict, folder: Path) -> None:
    """OpenVINO IR (saved uncompressed, f32) of each graph. With the ``onnx`` package installed the graphs go
    through ``torch.onnx.export`` (several times faster to convert, same IR speed: docs/engines.md), else
    ``openvino.convert_model`` of a ``torch.export`` program (openvino alone suffices)."""
    ov = runtime("openvino")
    try:
        importlib.import_module("onnx")
        via_onnx = True
    except ImportError:
        via_onnx = False
    if via_onnx:
        _export_onnx(model, ex, folder, check_runtime=False)
    from torch.export import Dim

    points = Dim("points", min=1, max=1 << 16)
    for stage, (graph, args) in _graphs(model, ex).items():
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if via_onnx:
                ov_model = ov.convert_model(str(folder / f"{stage}.onnx"))
                (folder / f"{stage}.onnx").unlink()
            else:
                dyn = None
                if stage == "decoder":
                    dyn = (None, {1: points}, {1: points}) + ((None,) if len(args) > 3 else ())
                ov_model = ov.convert_model(torch.export.export(graph, args, dynamic_shapes=dyn))
        ov.save_model(ov_model, str(folder / f"{stage}.xml"), compress_to_fp16=False)


def _load_openvino(folder: Path, stages, precision: dict) -> dict:
    """Runners of the IR graphs in ``folder``. Each graph is compiled on its first call, not here: automatic
    segmentation runs the encoder only where SAM is asked for (``InferenceConfig.sam``), so a run that never needs
    it does not pay its compilation (docs/engines.md)."""
    ov = runtime("openvino")
    core = ov.Core()
    runners = {}
    for stage in stages:
        config = {"INFERENCE_PRECISION_HINT": precision.get(stage, "f32"),
                  "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": torch.get_num_threads()}
        xml = str(folder / f"{stage}.xml")
        runners[stage] = _locked(_Lazy(lambda p=xml, c=config: core.compile_model(p, "CPU", c)))
    return runners


class _Lazy:
    """An OpenVINO graph compiled on first use: ``call(arrays) -> list[np.ndarray]`` (serialised by ``_locked``)."""

    def __init__(self, compile_fn):
        self.compile_fn = compile_fn
        self.compiled = None

    def __call__(self, arrays):
        if self.compiled is None:
            self.compiled = self.compile_fn()
        return [np.array(v) for v in self.compiled(arrays).to_tuple()]


def _export_onnx(model, ex: dict, folder: Path, check_runtime: bool = True) -> None:
    """``torch.onnx.export`` (TorchScript exporter, opset 17) with the point axis dynamic."""
    if check_runtime:
        runtime("onnxruntime")
        runtime("onnx", "onnxruntime")  # the exporter writes through the onnx package
    for stage, (graph, args) in _graphs(model, ex).items():
        names = ["emb", "coords", "labels", "mask"][: len(args)] if stage == "decoder" else ["images"]
        dyn = {"coords": {1: "points"}, "labels": {1: "points"}} if stage == "decoder" else None
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, args, str(folder / f"{stage}.onnx"), input_names=names, dynamic_axes=dyn,
                              opset_version=17, dynamo=False)


def _load_onnxruntime(folder: Path, stages, precision: dict) -> dict:
    ort = runtime("onnxruntime")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    runners = {}
    for stage in stages:
        sess = ort.InferenceSession(str(folder / f"{stage}.onnx"), opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        runners[stage] = _locked(lambda arrays, s=sess, n=names: s.run(None, dict(zip(n, arrays, strict=True))))
    return runners


def _locked(fn):
    """Serialise calls of one compiled graph (the web app may call from several threads)."""
    lock = threading.Lock()

    def call(arrays):
        with lock:
            return fn(arrays)

    return call


BACKENDS = {"openvino": (_export_openvino, _load_openvino), "onnxruntime": (_export_onnx, _load_onnxruntime)}


def check(engine: Engine, ex: dict, precision: dict) -> tuple[bool, str]:
    """Compare ``engine`` with torch on the reference tile, stage by stage and end to end; ``precision``: stage ->
    ``f32`` | ``bf16`` (absent = f32) sets each stage's tolerance. -> (passed, one-line summary of the largest
    differences)."""
    ref = ex["torch"]
    x = ex["x"]
    diffs = {}

    def rel(a, b):
        return float((a - b).abs().max() / max(1.0, float(b.abs().max())))

    diffs["encoder"] = rel(engine.encode(x), ref.encode(x))
    agree_unet = 1.0
    if ex["logits"] is not None:
        pm, pr = engine.prompt_maps(x), ref.prompt_maps(x)
        diffs["unet"] = max(rel(a, b) for a, b in zip(pm, pr, strict=True) if b is not None)
        # The UNet's map is the automatic mask (InferenceConfig.sam "prompts"): its binary mask must agree too.
        agree_unet = float(((pm[0] > 0) == (pr[0] > 0)).float().mean())
    emb, coords, labels = ex["decoder"][:3]
    mp = ex["logits"]
    m_eng, _ = engine.decode(emb, coords, labels, mp)
    m_ref, _ = ref.decode(emb, coords, labels.long(), mp)
    diffs["decoder"] = rel(m_eng, m_ref)
    # End to end: the engine's own embedding through its decoder, binary mask against torch's.
    m_e2e, _ = engine.decode(engine.encode(x), coords, labels, mp)
    agree = float(((m_e2e > 0) == (m_ref > 0)).float().mean())
    ok = all(diffs[s] <= TOLERANCE[precision.get(s, "f32")] for s in diffs)
    ok = ok and min(agree, agree_unet) >= MASK_AGREEMENT
    summary = (", ".join(f"{s} {d:.2g}" for s, d in diffs.items())
               + f", mask agreement {agree:.4f}, UNet mask agreement {agree_unet:.4f}")
    return ok, summary


def _compiled(model, name: str, precision: str) -> Engine:
    """The compiled engine ``name`` from the cache (exported and checked on a miss), or torch with a warning when the
    check fails."""
    package = runtime(name)
    # Only OpenVINO runs a stage in bf16; ONNX Runtime stays f32 (and is checked as such).
    precisions = {"encoder": precision, "unet": UNET_PRECISION} if name == "openvino" else {}
    settings = {"engine": name, "runtime": getattr(package, "__version__", "?"), "torch": torch.__version__,
                "export": EXPORT_VERSION, "precision": precision, "unet_precision": precisions.get("unet", "f32"),
                "model": model.identity if isinstance(model, ModelHandle) else engine_cache.model_hash(model)}
    folder = engine_cache.cache_dir() / "engines" / f"{name}-{engine_cache.entry_key(settings)}"
    export, load = BACKENDS[name]
    stages = ["encoder", "decoder"] + (["unet"] if model.prompt_channels else [])
    meta = engine_cache.load_entry(folder)
    if meta is None:
        tmp = engine_cache.new_entry(folder)
        module = model.build() if isinstance(model, ModelHandle) else model
        try:
            ex = _graph_inputs(module)
            export(module, ex, tmp)
            engine_cache.EXPORTS[name] += 1
            ok, summary = check(CompiledEngine(module, load(tmp, stages, precisions), name), ex, precisions)
        except SACError:  # a package is missing: nothing to cache
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        except Exception as e:  # an exporter or runtime failure is a reason to fall back, not to crash
            ok, summary = False, f"export failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        meta = engine_cache.commit_entry(tmp, folder, {**settings, "verified": ok, "check": summary})
    if not meta.get("verified"):
        fallback = Engine(model, "cpu")
        fallback.note = f"{name} engine differs from torch ({meta.get('check')}); using torch"
        warnings.warn(fallback.note, RuntimeWarning, stacklevel=3)
        return fallback
    return CompiledEngine(model, load(folder, stages, precisions), name)


def make_engine(model, name: str = "auto", device: torch.device | str = "cpu", *,
                precision: str | None = None) -> Engine:
    """The engine ``name`` (``auto`` | ``openvino`` | ``onnxruntime`` | ``torch``) for ``model`` on ``device``.

    ``auto`` = the first of :data:`AUTO_ORDER` that is installed and passes the check; cuda, and modules that are
    not a :class:`SAC` (test stand-ins), always run torch.
    ``precision`` (OpenVINO encoder: ``f32`` | ``bf16``; default :data:`ENCODER_PRECISION`). Raises SACError for
    an unknown name or an explicitly requested runtime that is not installed.
    """
    device = torch.device(device)
    precision = precision or ENCODER_PRECISION
    if name != "auto" and name not in ENGINES:
        raise SACError(f"--engine must be one of auto, {', '.join(ENGINES)}; got {name!r}")
    if precision not in TOLERANCE:
        raise SACError(f"engine precision must be one of {', '.join(TOLERANCE)}; got {precision!r}")
    if name == "torch" or device.type != "cpu" or (name == "auto" and not isinstance(model, SAC | ModelHandle)):
        return Engine(model, device)
    if name != "auto":
        return _compiled(model, name, precision)
    for candidate in AUTO_ORDER:
        if candidate == "torch":
            break
        try:
            engine = _compiled(model, candidate, precision)
        except SACError:  # not installed: try the next one
            continue
        if engine.name == candidate:
            return engine
    return Engine(model, device)
