"""Load and latency of `sac serve` (docs/serve.md), against 127.0.0.1 only and bounded in time.

A real `sac serve` process is started on a free 127.0.0.1 port (the command users run; its RSS is the server's).

1. ``first_contours``: one client uploads a 1000 x 1000 MoNuSeg image and polls until it holds every nucleus outline
   (``/api/contours``); the time from the start of the upload is "time to first contours". Compared with
   `sac segment` on the same image (a subprocess: wall time including process start and model load, and the
   segmentation time it prints) -- the server has its model loaded already, which is the point of a server.
2. ``load``: ``--clients`` threads, each with its own HTTP client (so its own session), upload a different
   ``--crop`` x ``--crop`` crop of a MoNuSeg training image, wait for the automatic segmentation (queued behind
   the others: ``--workers`` at a time), then click for ``--seconds`` like a user (the next click after the
   reply): ``add`` at a random pixel, then ``undo``, alternately. Reported: every non-2xx response (must be 0),
   latency median / p95 per route, clicks per second, time until each client's image was ready, and the server's
   peak RSS (``VmHWM`` of the process, and the largest ``VmRSS`` sampled every 0.5 s during the run).

    nice -n 5 .venv/bin/python benchmarks/serve_load.py [--clients 20] [--seconds 60] [--crop 512]
        [--model default] [--out benchmarks/results/serve_load.json]

Timings depend on the machine's other load: ``os.getloadavg()`` is recorded before and after.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import imageio.v3 as iio
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SAC_DATA", REPO.parent / "shared" / "data"))
HOST = "127.0.0.1"  # never anything else: this benchmark only talks to a server it started on this machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def proc_memory(pid: int) -> dict:
    """``VmRSS`` and ``VmHWM`` (peak) of a process, in MB."""
    text = Path(f"/proc/{pid}/status").read_text()
    out = {}
    for key in ("VmRSS", "VmHWM"):
        m = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
        out[key] = int(m.group(1)) / 1024 if m else None
    return out


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    iio.imwrite(buf, image, extension=".png")
    return buf.getvalue()


def pct(values, q) -> float | None:
    return round(float(np.percentile(values, q)), 1) if len(values) else None


def wait_ready(client: httpx.Client, deadline: float) -> dict:
    while time.monotonic() < deadline:
        st = client.get("/api/state").json()
        if st["status"] not in ("queued", "running"):
            return st
        time.sleep(0.1)
    return {"status": "timeout"}


def first_contours(url: str, image: np.ndarray, deadline: float) -> dict:
    with httpx.Client(base_url=url, timeout=600) as c:
        t0 = time.perf_counter()
        r = c.post("/api/open/upload?name=first.png", content=png(image))
        r.raise_for_status()
        st = wait_ready(c, deadline)
        payload = c.get("/api/contours").json()
        seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 2), "server_segment_seconds": st.get("seconds"), "tiles": st.get("total"),
            "n_nuclei": payload["n_nuclei"], "outlines": len(payload["nuclei"]), "session_mb": st.get("memory_mb"),
            "contours_payload_mb": round(len(json.dumps(payload)) / 2**20, 2)}


def sac_segment(image_path: Path, model: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "sac.cli", "segment", str(image_path), "--out", out,
                               "--model", model], capture_output=True, text=True)
        wall = time.perf_counter() - t0
    m = re.search(r"(\d+) nuclei in ([\d.]+) s", proc.stdout)
    return {"wall_seconds": round(wall, 2), "printed": proc.stdout.strip(), "returncode": proc.returncode,
            "n_nuclei": int(m.group(1)) if m else None, "seconds_after_start": float(m.group(2)) if m else None}


def client_loop(url: str, image: np.ndarray, seconds: float, deadline: float, seed: int, out: dict) -> None:
    rng = random.Random(seed)
    H, W = image.shape[:2]
    lat: dict[str, list[float]] = {"add": [], "undo": []}
    errors: list[str] = []
    with httpx.Client(base_url=url, timeout=120) as c:
        t0 = time.perf_counter()
        r = c.post(f"/api/open/upload?name=client{seed}.png", content=png(image))
        if r.status_code != 200:
            errors.append(f"open {r.status_code}: {r.text[:200]}")
        st = wait_ready(c, deadline)
        out["ready_seconds"] = round(time.perf_counter() - t0, 2)
        out["session_mb"] = st.get("memory_mb")
        if st["status"] != "ready":
            errors.append(f"not ready: {st}")
        else:
            end = min(time.monotonic() + seconds, deadline)
            while time.monotonic() < end:
                op = "add" if len(lat["add"]) == len(lat["undo"]) else "undo"
                body = {"x": rng.uniform(0, W - 1), "y": rng.uniform(0, H - 1)} if op == "add" else None
                t = time.perf_counter()
                r = c.post(f"/api/{op}", json=body) if body else c.post(f"/api/{op}")
                lat[op].append((time.perf_counter() - t) * 1000)
                if r.status_code != 200:
                    errors.append(f"{op} {r.status_code}: {r.text[:200]}")
    out.update(latency=lat, errors=errors)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--crop", type=int, default=512)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--budget", type=float, default=900, help="hard limit of the whole run, seconds")
    ap.add_argument("--skip-first-contours", action="store_true")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "serve_load.json"))
    args = ap.parse_args()

    from sac.data.io import read_image

    images = sorted((DATA / "monuseg" / "train" / "images").glob("*.png"))
    if not images:
        sys.exit(f"no MoNuSeg images under {DATA}")
    load_before = os.getloadavg()
    port = free_port()
    url = f"http://{HOST}:{port}"
    cmd = [sys.executable, "-m", "sac.cli", "serve", "--host", HOST, "--port", str(port), "--model", args.model,
           "--workers", str(args.workers)]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    start = time.monotonic()
    deadline = start + args.budget
    peak = {"VmRSS": 0.0}
    stop = threading.Event()
    try:
        while True:
            try:
                info = httpx.get(url + "/api/info", timeout=2).json()
                break
            except httpx.HTTPError:
                if server.poll() is not None or time.monotonic() > start + 300:
                    sys.exit(f"server did not start: {server.stdout.read()}")
                time.sleep(0.5)
        startup = time.monotonic() - start

        def sample():
            while not stop.is_set():
                peak["VmRSS"] = max(peak["VmRSS"], proc_memory(server.pid)["VmRSS"] or 0)
                stop.wait(0.5)

        threading.Thread(target=sample, daemon=True).start()
        result = {"command": " ".join(["nice -n 5 .venv/bin/python benchmarks/serve_load.py", *sys.argv[1:]]),
                  "server_command": " ".join(cmd[2:]).replace(sys.executable, "python"), "model": info["model"],
                  "engine": info.get("engine"), "server_start_seconds": round(startup, 1)}
        if not args.skip_first_contours:
            full = read_image(images[0])
            result["first_contours"] = {"image": images[0].name, "size": list(full.shape[:2]),
                                        "serve": first_contours(url, full, deadline),
                                        "sac_segment": sac_segment(images[0], args.model)}
            print(json.dumps(result["first_contours"], indent=1), flush=True)
        outs = [dict() for _ in range(args.clients)]
        threads = []
        for k in range(args.clients):
            img = read_image(images[k % len(images)])
            y, x = (k * 97) % (img.shape[0] - args.crop + 1), (k * 53) % (img.shape[1] - args.crop + 1)
            crop = np.ascontiguousarray(img[y : y + args.crop, x : x + args.crop])
            t = threading.Thread(target=client_loop, args=(url, crop, args.seconds, deadline, k, outs[k]))
            threads.append(t)
            t.start()
        for t in threads:
            t.join(max(1.0, deadline - time.monotonic() + 30))
        mem = proc_memory(server.pid)
        adds = [v for o in outs for v in o.get("latency", {}).get("add", [])]
        undos = [v for o in outs for v in o.get("latency", {}).get("undo", [])]
        errors = [e for o in outs for e in o.get("errors", ["client did not finish"])]
        ready = [o["ready_seconds"] for o in outs if "ready_seconds" in o]
        result["load"] = {
            "clients": args.clients, "seconds_clicking_each": args.seconds, "crop": args.crop,
            "workers": args.workers, "requests": len(adds) + len(undos), "error_responses": len(errors),
            "errors": errors[:20],
            "add_ms": {"n": len(adds), "median": pct(adds, 50), "p95": pct(adds, 95), "max": pct(adds, 100)},
            "undo_ms": {"n": len(undos), "median": pct(undos, 50), "p95": pct(undos, 95), "max": pct(undos, 100)},
            "clicks_per_second": round((len(adds) + len(undos)) / max(args.seconds, 1e-9), 1),
            "ready_seconds": {"median": pct(ready, 50), "max": pct(ready, 100)},
            "session_mb_median": pct([o["session_mb"] for o in outs if o.get("session_mb") is not None], 50),
            "server_peak_rss_mb": round(max(mem["VmHWM"] or 0, peak["VmRSS"]), 1),
            "server_rss_end_mb": round(mem["VmRSS"] or 0, 1),
        }
        result.update(loadavg_before=[round(v, 2) for v in load_before],
                      loadavg_after=[round(v, 2) for v in os.getloadavg()], cpus=os.cpu_count(),
                      platform=platform.platform(), wall_seconds=round(time.monotonic() - start, 1),
                      shared_machine_note="timings taken on a shared 2-core machine (other jobs running)")
    finally:
        stop.set()
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
    print(json.dumps({k: v for k, v in result.items() if k != "first_contours"}, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0 if result["load"]["error_responses"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
