// The page of `sac serve`: open an image, follow the automatic segmentation, edit with the tools, export.
// Every edit is one POST to /api/<op> (one Editor call on the server); the reply carries the changed outlines.
import { Viewer } from "/static/view.js";

const $ = (id) => document.getElementById(id);
const view = $("view"), viewer = new Viewer(view, $("image"), $("overlay"));
const state = { tool: "add", status: "empty", nNuclei: null, busy: 0, queue: Promise.resolve(), splitting: false };
// Click round trips (ms): from the click to the first frame drawn with the server's reply (benchmarks read them).
const latencies = [];
window.sac = { viewer, state, latencies }; // for tests, benchmarks and the browser console

// ------------------------------------------------------------------ server calls
async function api(path, options = {}) {
  const res = await fetch(path, { credentials: "same-origin", ...options });
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail; } catch (e) { /* not JSON */ }
    if (typeof detail !== "string") detail = JSON.stringify(detail);
    if (res.status === 410) reset();
    throw new Error(detail);
  }
  return res;
}
const json = (path, body) => api(path, body === undefined ? {} : {
  method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) }).then((r) => r.json());

function say(text, error = false) { const m = $("message"); m.textContent = text; m.classList.toggle("error", error); }

// Edits run one after the other, in click order.
function edit(op, body = {}) {
  const t0 = performance.now();
  state.busy++; document.body.dataset.busy = state.busy;
  state.queue = state.queue.then(async () => {
    try {
      const r = await json("/api/" + op, body);
      viewer.apply(r.contours);
      requestAnimationFrame(() => latencies.push({ op, ms: performance.now() - t0 }));
      state.nNuclei = r.n_nuclei;
      say(r.message);
      stats();
    } catch (e) { say(e.message, true); }
    finally { state.busy--; document.body.dataset.busy = state.busy; }
  });
  return state.queue;
}

// ------------------------------------------------------------------ opening and progress
function reset() {
  viewer.clear(); state.status = "empty"; state.nNuclei = null; document.body.dataset.status = "empty";
  $("image").removeAttribute("src"); $("hint").hidden = false; stats();
}

async function opened(st) {
  $("hint").hidden = true; $("name").textContent = st.name;
  viewer.clear();
  viewer.setImage(st.width, st.height);
  $("image").src = "/api/image?t=" + Date.now();
  follow();
}

async function follow() {
  let st;
  try { st = await json("/api/state"); } catch (e) { say(e.message, true); return; }
  // "ready" is announced (state and data-status, which tests wait on) only once the outlines are loaded.
  if (st.status !== "ready") { state.status = st.status; document.body.dataset.status = st.status; }
  const bar = $("progress");
  bar.hidden = !(st.status === "queued" || st.status === "running");
  bar.max = Math.max(1, st.total); bar.value = st.done;
  $("status").textContent = st.status === "running" ? (st.total ? `segmenting: tile ${st.done} / ${st.total}` : "preparing")
    : st.status === "queued" ? "waiting for a free worker" : st.status === "failed" ? "failed" : "";
  if (st.status === "queued" || st.status === "running") { setTimeout(follow, 250); return; }
  if (st.status === "failed") { say(st.message, true); return; }
  if (st.status === "ready") {
    const c = await json("/api/contours");
    viewer.load(c); state.nNuclei = c.n_nuclei;
    $("status").textContent = `segmented in ${st.seconds} s`;
    say(`${c.n_nuclei} nuclei found. Click to correct.`); stats();
    state.status = "ready"; document.body.dataset.status = "ready";
  }
}

$("file").addEventListener("change", async (ev) => {
  const f = ev.target.files[0];
  if (!f) return;
  say(`uploading ${f.name} ...`);
  try { opened(await (await api("/api/open/upload?name=" + encodeURIComponent(f.name), { method: "POST", body: f })).json()); }
  catch (e) { say(e.message, true); }
  ev.target.value = "";
});

$("open-library").addEventListener("click", async () => {
  try { opened(await json("/api/open/library", { id: $("library").value })); } catch (e) { say(e.message, true); }
});

// ------------------------------------------------------------------ statistics
function stats() {
  const areas = [...viewer.nuclei.values()].map((n) => n.area).sort((a, b) => a - b);
  $("count").textContent = areas.length;
  $("count").dataset.api = state.nNuclei ?? "";
  const h = $("histogram"), g = h.getContext("2d");
  g.clearRect(0, 0, h.width, h.height);
  if (!areas.length) { $("area-stats").textContent = ""; return; }
  const top = areas[Math.floor(0.99 * (areas.length - 1))] || 1, bins = new Array(24).fill(0);
  for (const a of areas) bins[Math.min(bins.length - 1, Math.floor((a / top) * bins.length))]++;
  const peak = Math.max(...bins), bw = h.width / bins.length;
  g.fillStyle = "#2b6cb0";
  bins.forEach((n, k) => { const bh = (n / peak) * (h.height - 12); g.fillRect(k * bw + 1, h.height - 12 - bh, bw - 2, bh); });
  g.fillStyle = "#333"; g.font = "10px sans-serif"; g.fillText("0", 0, h.height - 1);
  g.fillText(`${top} px`, h.width - 40, h.height - 1);
  const mean = areas.reduce((a, b) => a + b, 0) / areas.length;
  $("area-stats").textContent = `area (px): median ${areas[areas.length >> 1]}, mean ${mean.toFixed(0)}, ` +
    `min ${areas[0]}, max ${areas[areas.length - 1]}`;
}

// ------------------------------------------------------------------ tools
function setTool(t) {
  state.tool = t; cancelSplit();
  document.querySelectorAll("[data-tool]").forEach((b) => b.classList.toggle("active", b.dataset.tool === t));
  view.classList.toggle("pan", t === "pan");
}
document.querySelectorAll("[data-tool]").forEach((b) => b.addEventListener("click", () => setTool(b.dataset.tool)));

const pixel = (u, v) => [Math.min(viewer.W - 1, Math.max(0, u - 0.5)), Math.min(viewer.H - 1, Math.max(0, v - 0.5))];

function click(sx, sy, shift) {
  const [u, v] = viewer.toImage(sx, sy);
  if (u < 0 || v < 0 || u > viewer.W || v > viewer.H) return;
  const [x, y] = pixel(u, v);
  if (state.splitting) { viewer.markers.push([x, y]); viewer.changed(); say(`${viewer.markers.length} split point(s): Enter applies`); return; }
  if (state.tool === "add") edit("add", { x, y });
  else if (state.tool === "remove") edit("remove", { x, y });
  else if (state.tool === "select") {
    const id = viewer.hit(u, v);
    if (!shift) viewer.selected.clear();
    if (id) { if (viewer.selected.has(id) && shift) viewer.selected.delete(id); else viewer.selected.add(id); }
    say(viewer.selected.size ? `selected: ${[...viewer.selected].join(", ")}` : "nothing selected");
    viewer.changed();
  }
}

function deleteSelected() { for (const id of [...viewer.selected]) edit("delete", { id }); viewer.selected.clear(); }
function mergeSelected() {
  if (viewer.selected.size < 2) { say("select 2 or more nuclei (Shift+click) to merge", true); return; }
  edit("merge", { ids: [...viewer.selected] }); viewer.selected.clear();
}
function startSplit() {
  if (viewer.selected.size !== 1) { say("select one nucleus to split", true); return; }
  state.splitting = true; viewer.markers = []; say("click one point inside each part, then Enter (Esc cancels)");
}
function applySplit() {
  const id = [...viewer.selected][0], points = viewer.markers.map(([x, y]) => [x, y]);
  cancelSplit(); edit("split", { id, points });
}
function cancelSplit() { state.splitting = false; viewer.markers = []; viewer.changed(); }

$("delete").onclick = deleteSelected; $("merge").onclick = mergeSelected; $("split").onclick = startSplit;
$("undo").onclick = () => edit("undo"); $("redo").onclick = () => edit("redo"); $("fit").onclick = () => viewer.fit();

// ------------------------------------------------------------------ mouse: click acts, drag pans (box: drag = box)
let drag = null, spaceDown = false;
view.addEventListener("pointerdown", (ev) => {
  view.focus(); view.setPointerCapture(ev.pointerId);
  const r = view.getBoundingClientRect();
  drag = { x: ev.clientX - r.left, y: ev.clientY - r.top, moved: false, last: [ev.clientX, ev.clientY],
    pan: state.tool === "pan" || spaceDown || ev.button !== 0, shift: ev.shiftKey };
});
view.addEventListener("pointermove", (ev) => {
  if (!drag) return;
  const r = view.getBoundingClientRect(), dx = ev.clientX - drag.last[0], dy = ev.clientY - drag.last[1];
  if (Math.abs(ev.clientX - r.left - drag.x) + Math.abs(ev.clientY - r.top - drag.y) > 4) drag.moved = true;
  if (!drag.moved) return;
  if (state.tool === "box" && !drag.pan) {
    const rb = $("rubber"), x = ev.clientX - r.left, y = ev.clientY - r.top;
    Object.assign(rb.style, { left: Math.min(x, drag.x) + "px", top: Math.min(y, drag.y) + "px",
      width: Math.abs(x - drag.x) + "px", height: Math.abs(y - drag.y) + "px" });
    rb.hidden = false;
  } else { view.classList.add("panning"); viewer.panBy(dx, dy); }
  drag.last = [ev.clientX, ev.clientY];
});
view.addEventListener("pointerup", (ev) => {
  if (!drag) return;
  const r = view.getBoundingClientRect(), x = ev.clientX - r.left, y = ev.clientY - r.top, d = drag;
  drag = null; view.classList.remove("panning"); $("rubber").hidden = true;
  if (state.status !== "ready" && !d.pan) { if (!d.moved) say("wait for the automatic segmentation to finish", true); return; }
  if (state.tool === "box" && !d.pan && d.moved) {
    const [a, b] = pixel(...viewer.toImage(d.x, d.y)), [c, e] = pixel(...viewer.toImage(x, y));
    edit("box", { x0: a, y0: b, x1: c, y1: e });
  } else if (!d.moved && !d.pan) click(x, y, d.shift);
});
view.addEventListener("wheel", (ev) => {
  ev.preventDefault();
  const r = view.getBoundingClientRect();
  viewer.zoomAt(ev.clientX - r.left, ev.clientY - r.top, Math.exp(-ev.deltaY * 0.0015));
}, { passive: false });

// ------------------------------------------------------------------ keyboard
const KEYS = { a: () => setTool("add"), r: () => setTool("remove"), b: () => setTool("box"), s: () => setTool("select"),
  h: () => setTool("pan"), m: mergeSelected, p: startSplit, f: () => viewer.fit(), Delete: deleteSelected,
  Backspace: deleteSelected, Escape: cancelSplit, Enter: () => state.splitting && applySplit() };
function centre(f) { const r = view.getBoundingClientRect(); viewer.zoomAt(r.width / 2, r.height / 2, f); }
document.addEventListener("keydown", (ev) => {
  if (ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT") return;
  if (ev.key === " ") { spaceDown = true; ev.preventDefault(); return; }
  if ((ev.ctrlKey || ev.metaKey) && ev.key.toLowerCase() === "z") { ev.preventDefault(); edit(ev.shiftKey ? "redo" : "undo"); return; }
  if ((ev.ctrlKey || ev.metaKey) && ev.key.toLowerCase() === "y") { ev.preventDefault(); edit("redo"); return; }
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (ev.key === "+" || ev.key === "=") centre(1.25);
  else if (ev.key === "-") centre(0.8);
  else if (ev.key === "0") centre(1 / viewer.s);
  else (KEYS[ev.key] || KEYS[ev.key.toLowerCase()] || (() => {}))();
});
document.addEventListener("keyup", (ev) => { if (ev.key === " ") spaceDown = false; });

// ------------------------------------------------------------------ display, export, saving
$("contour-opacity").oninput = (ev) => { viewer.contourAlpha = +ev.target.value; viewer.restyle(); };
$("fill-opacity").oninput = (ev) => { viewer.fillAlpha = +ev.target.value; viewer.restyle(); };

document.querySelectorAll("[data-export]").forEach((b) => b.addEventListener("click", async () => {
  try {
    await state.queue; // after the pending edits
    const res = await api("/api/export/" + b.dataset.export);
    const name = (res.headers.get("Content-Disposition") || "").match(/filename="(.+)"/)?.[1] || b.dataset.export;
    const a = document.createElement("a");
    a.href = URL.createObjectURL(await res.blob()); a.download = name;
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    say(`exported ${name}`);
  } catch (e) { say(e.message, true); }
}));

$("save-example").onclick = async () => {
  try {
    await state.queue;
    const r = await json("/api/save-example", { split: $("split-name").value });
    say(`saved ${r.image} (+ labels); ${r.pairs_in_split} example(s) in split ${r.split}. Next: ${r.train_hint}`);
  } catch (e) { say(e.message, true); }
};

// ------------------------------------------------------------------ start
(async () => {
  setTool("add");
  try {
    const info = await json("/api/info");
    $("save-box").hidden = !info.can_save;
    if (info.library) {
      const items = (await json("/api/library")).items;
      $("library").replaceChildren(...items.map((i) => new Option(i.name, i.id)));
      $("library-box").hidden = items.length === 0;
    }
    const st = await json("/api/state").catch(() => null); // a reload keeps the session's image
    if (st && st.status !== "empty") opened(st);
  } catch (e) { say(e.message, true); }
})();
