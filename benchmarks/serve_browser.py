"""`sac serve` in Chromium: click round trip, and drawing speed on a 4000 x 4000 image (docs/serve.md).

A real `sac serve` process on a free 127.0.0.1 port; Playwright drives Debian's Chromium (headless, software
rendering: --disable-gpu, so frame times are pessimistic next to a desktop browser with a GPU).

1. ``clicks``: a ``--crop`` x ``--crop`` MoNuSeg crop is opened; then ``--clicks`` times: a click with the add tool
   at a random point of the image, then Ctrl+Z. The round trip is measured in the page (``window.sac.latencies``):
   from the click to the first frame drawn with the server's reply.
2. ``big``: drawing speed of the page on a ``--big`` x ``--big`` mosaic of MoNuSeg training images (1000 x 1000
   each) with the outlines of their ground-truth nuclei. Rendering only: the page's ``/api/state``, ``/api/image``
   and ``/api/contours`` answers are served by Playwright (route interception) from the mosaic and
   ``sac.web.contours.Contours`` of its labels -- the payload the server sends -- so the figure does not wait for a
   16-megapixel segmentation on this shared CPU. Reported: nuclei, payload size, time from page load to outlines
   shown, the time to draw every outline (whole image in view), and frame times while zooming and panning
   continuously for 3 s (requestAnimationFrame intervals).

    nice -n 5 .venv/bin/python benchmarks/serve_browser.py [--clicks 100] [--crop 512] [--big 4000]
        [--out benchmarks/results/serve_browser.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import imageio.v3 as iio
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SAC_DATA", REPO.parent / "shared" / "data"))
HOST = "127.0.0.1"
CHROMIUM = os.environ.get("SAC_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync"]

FRAMES_JS = """async (seconds) => {
  const v = window.sac.viewer, r = v.view.getBoundingClientRect(), times = [], draws = [];
  v.fit();
  await new Promise((ok) => requestAnimationFrame(ok));
  const t0 = performance.now();
  let last = t0;
  await new Promise((ok) => {
    function step(now) {
      const k = times.length;
      times.push(now - last); last = now; draws.push(v.drawMs);
      // zoom in for 1 s, pan for 1 s, zoom out for 1 s: every frame moves the view
      if (now - t0 < seconds * 1000 / 3) v.zoomAt(r.width / 2, r.height / 2, 1.03);
      else if (now - t0 < seconds * 2000 / 3) v.panBy(8 * Math.cos(k / 10), 8 * Math.sin(k / 10));
      else if (now - t0 < seconds * 1000) v.zoomAt(r.width / 2, r.height / 2, 1 / 1.03);
      else return ok();
      requestAnimationFrame(step);
    }
    requestAnimationFrame(step);
  });
  return { frames: times.slice(1), draws: draws.slice(1) };
}"""


def pct(values, q) -> float | None:
    return round(float(np.percentile(values, q)), 1) if len(values) else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_status(page, timeout_ms: int) -> None:
    page.wait_for_function("document.body.dataset.status === 'ready' || document.body.dataset.status === 'failed'",
                           timeout=timeout_ms)
    assert page.evaluate("document.body.dataset.status") == "ready"


def clicks(page, url: str, image_path: Path, n: int, seed: int = 0) -> dict:
    page.goto(url)
    page.set_input_files("#file", str(image_path))
    wait_status(page, 600_000)
    box = page.locator("#view").bounding_box()
    v = page.evaluate("({s: window.sac.viewer.s, tx: window.sac.viewer.tx, ty: window.sac.viewer.ty, "
                      "W: window.sac.viewer.W, H: window.sac.viewer.H})")
    rng = random.Random(seed)
    page.keyboard.press("a")
    for k in range(n):
        u, w = rng.uniform(1, v["W"] - 1), rng.uniform(1, v["H"] - 1)
        page.mouse.click(box["x"] + v["tx"] + u * v["s"], box["y"] + v["ty"] + w * v["s"])
        page.wait_for_function(f"window.sac.latencies.length >= {2 * k + 1}", timeout=60_000)
        page.keyboard.press("Control+z")
        page.wait_for_function(f"window.sac.latencies.length >= {2 * k + 2}", timeout=60_000)
    lat = page.evaluate("window.sac.latencies")
    add = [x["ms"] for x in lat if x["op"] == "add"]
    undo = [x["ms"] for x in lat if x["op"] == "undo"]
    return {"clicks": n, "add_ms": {"median": pct(add, 50), "p95": pct(add, 95)},
            "undo_ms": {"median": pct(undo, 50), "p95": pct(undo, 95)}}


def big(page, url: str, image: np.ndarray, labels: np.ndarray) -> dict:
    import io

    from sac.web.contours import Contours

    t = time.perf_counter()
    payload = {"n_nuclei": int(len(np.unique(labels)) - 1), **Contours(labels).payload()}
    body = json.dumps(payload, separators=(",", ":"))
    server_seconds = time.perf_counter() - t
    buf = io.BytesIO()
    iio.imwrite(buf, image, extension=".png")
    H, W = labels.shape
    state = {"status": "ready", "done": 1, "total": 1, "message": "", "name": "mosaic", "width": W, "height": H,
             "n_nuclei": payload["n_nuclei"], "seconds": 0, "version": 0}
    page.route("**/api/state", lambda r: r.fulfill(json=state))
    page.route("**/api/image*", lambda r: r.fulfill(body=buf.getvalue(), content_type="image/png"))
    page.route("**/api/contours", lambda r: r.fulfill(body=body, content_type="application/json"))
    t0 = time.perf_counter()
    page.goto(url)
    wait_status(page, 300_000)
    page.wait_for_function("document.getElementById('image').complete", timeout=120_000)
    shown = time.perf_counter() - t0
    page.wait_for_timeout(500)
    # every outline drawn into the bitmap at once (what the sliced drawing spreads over frames), and one blit of it
    full = [page.evaluate("""(() => { const v = window.sac.viewer, t = performance.now();
        v.next = null; v.build(v.s * (window.devicePixelRatio || 1)); while (v.next) v.build(v.next.scale);
        return performance.now() - t; })()""") for _ in range(5)]
    blit = [page.evaluate("(() => { window.sac.viewer.draw(); return window.sac.viewer.drawMs; })()")
            for _ in range(10)]
    frames = page.evaluate(FRAMES_JS, 3)
    return {"side": W, "nuclei": payload["n_nuclei"], "drawn_at_fit": int(page.get_attribute("#overlay", "data-drawn")),
            "contours_payload_mb": round(len(body) / 2**20, 2), "payload_build_s": round(server_seconds, 2),
            "page_load_to_outlines_s": round(shown, 1),
            "outline_bitmap_all_ms": {"median": pct(full, 50), "max": pct(full, 100)},
            "frame_blit_ms": {"median": pct(blit, 50), "max": pct(blit, 100)},
            "zoom_pan_frame_ms": {"frames": len(frames["frames"]), "median": pct(frames["frames"], 50),
                                  "p95": pct(frames["frames"], 95)},
            "zoom_pan_draw_ms": {"median": pct(frames["draws"], 50), "p95": pct(frames["draws"], 95)}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--clicks", type=int, default=100)
    ap.add_argument("--crop", type=int, default=512)
    ap.add_argument("--big", type=int, default=4000, help="side of the mosaic (0 = skip)")
    ap.add_argument("--skip-clicks", action="store_true")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "serve_browser.json"))
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from sac.data.io import read_image

    paths = sorted((DATA / "monuseg" / "train" / "images").glob("*.png"))
    tmp = Path(tempfile.mkdtemp(prefix="sac-serve-bench-"))
    crop_path = tmp / "crop.png"
    iio.imwrite(crop_path, read_image(paths[1])[:args.crop, :args.crop])
    result = {"command": " ".join(["nice -n 5 .venv/bin/python benchmarks/serve_browser.py", *sys.argv[1:]]),
              "loadavg_before": [round(v, 2) for v in os.getloadavg()]}
    port = free_port()
    url = f"http://{HOST}:{port}"
    server = subprocess.Popen([sys.executable, "-m", "sac.cli", "serve", "--host", HOST, "--port", str(port),
                               "--model", args.model], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                result["engine"] = httpx.get(url + "/api/info", timeout=2).json().get("engine")
                break
            except httpx.HTTPError:
                if server.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"server did not start: {server.stdout.read()}")
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            if not args.skip_clicks:
                result["clicks"] = {"crop": args.crop, **clicks(page, url, crop_path, args.clicks)}
                print(json.dumps(result["clicks"]), flush=True)
            if args.big:
                from sac.data.io import read_labels

                k = -(-args.big // 1000)
                pairs = [(read_image(paths[i % len(paths)]),
                          read_labels(DATA / "monuseg" / "train" / "labels" / paths[i % len(paths)].name))
                         for i in range(k * k)]
                offset, labs = 0, []
                for _, lab in pairs:  # unique ids across the mosaic
                    labs.append(np.where(lab > 0, lab + offset, 0))
                    offset += int(lab.max())
                img_rows = [np.concatenate([p[0] for p in pairs[r * k : (r + 1) * k]], axis=1) for r in range(k)]
                lab_rows = [np.concatenate(labs[r * k : (r + 1) * k], axis=1) for r in range(k)]
                mosaic = np.ascontiguousarray(np.concatenate(img_rows, axis=0)[: args.big, : args.big])
                labels = np.ascontiguousarray(np.concatenate(lab_rows, axis=0)[: args.big, : args.big]).astype(np.int32)
                page2 = browser.new_page(viewport={"width": 1280, "height": 860})
                result["big"] = big(page2, url, mosaic, labels)
                page2.screenshot(path=str(tmp / "big.png"))
                print("screenshot:", tmp / "big.png", flush=True)
                print(json.dumps(result["big"]), flush=True)
            browser.close()
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
    result.update(loadavg_after=[round(v, 2) for v in os.getloadavg()], cpus=os.cpu_count(),
                  platform=platform.platform(), viewport=[1280, 860],
                  note="shared 2-core machine; headless Chromium with software rendering (--disable-gpu)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
