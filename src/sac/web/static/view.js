// The image viewport: zoom / pan, nucleus outlines on a canvas, hit-testing.
//
// Why this layout: the image is one <img> moved by a CSS transform (the compositor scales it, no redraw), and the
// outlines live on a separate canvas the size of the viewport, redrawn at most once per animation frame.
// Zoomed out (the whole image at the current zoom fits in CACHE_MAX pixels a side) the outlines are drawn once into
// an off-screen bitmap at that zoom and each frame is one drawImage of it: panning is a blit, zooming scales the
// bitmap, and an edit redraws only its rectangle. 150 ms after a zoom the bitmap is redrawn sharp at the new zoom
// into a second bitmap, a slice of at most SLICE_MS per frame, and swapped in when complete: no frame waits for
// thousands of outlines.
// Zoomed in, the outlines are drawn as vectors, only those inside the visible rectangle (a grid index of 256-pixel
// cells finds them). Drawing thousands of vector outlines every frame is what made a 4000 x 4000 image stutter
// (docs/serve.md). Coordinates are image pixels with pixel (row r, column c) covering [c, c+1] x [r, r+1] (as the
// GeoJSON export).

const CELL = 256;
const COLOURS = ["#ffe600", "#ff8c1a", "#4dd2ff", "#7dff6b", "#ff5cd6", "#b38cff"];
const SELECTED = "#00ffff";
const CACHE_MAX = 4096; // largest side of the outline bitmap (device pixels)
const REDRAW_AFTER_MS = 150;
const SLICE_MS = 12; // bitmap drawing per frame
const CHUNK = 300; // nuclei per paint call

export class Viewer {
  constructor(view, img, canvas) {
    this.view = view; this.img = img; this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.probe = document.createElement("canvas").getContext("2d"); // hit tests in image coordinates
    this.W = 0; this.H = 0;
    this.s = 1; this.tx = 0; this.ty = 0;
    this.nuclei = new Map(); // id -> {path, bbox: [y0, x0, y1, x1], area, cells}
    this.grid = new Map(); // "cx,cy" -> Set of ids
    this.selected = new Set();
    this.markers = []; // split seeds [[x, y], ...]
    this.contourAlpha = 0.9; this.fillAlpha = 0.2;
    this.pending = false;
    this.sharpen = false;
    this.drawMs = 0;
    this.cache = document.createElement("canvas"); // outlines of the whole image at cacheScale (device px / image px)
    this.cacheScale = 0; this.cacheValid = false; this.dirty = []; this.timer = 0;
    this.next = null; // the bitmap being drawn: {canvas, g, scale, ids, i}
    new ResizeObserver(() => this.resize()).observe(view);
  }

  // ------------------------------------------------------------------ geometry
  setImage(W, H) { this.W = W; this.H = H; this.clear(); this.fit(); }
  toImage(sx, sy) { return [(sx - this.tx) / this.s, (sy - this.ty) / this.s]; }
  fit() {
    const r = this.view.getBoundingClientRect();
    if (!this.W || !r.width) return;
    this.s = Math.min(r.width / this.W, r.height / this.H) * 0.98;
    this.tx = (r.width - this.W * this.s) / 2; this.ty = (r.height - this.H * this.s) / 2;
    this.changed();
  }
  zoomAt(sx, sy, factor) {
    const s = Math.min(64, Math.max(0.02, this.s * factor));
    const [u, v] = this.toImage(sx, sy);
    this.s = s; this.tx = sx - u * s; this.ty = sy - v * s;
    this.changed();
  }
  panBy(dx, dy) { this.tx += dx; this.ty += dy; this.changed(); }
  resize() {
    const r = this.view.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
    this.canvas.width = Math.round(r.width * dpr); this.canvas.height = Math.round(r.height * dpr);
    this.changed();
  }
  changed() {
    this.img.style.transform = `translate(${this.tx}px, ${this.ty}px) scale(${this.s})`;
    this.img.classList.toggle("pixelated", this.s >= 3);
    if (this.cacheValid && this.cacheScale !== this.s * (window.devicePixelRatio || 1)) {
      clearTimeout(this.timer);  // zooming: scale the bitmap now, redraw it sharp once the zoom rests
      this.timer = setTimeout(() => { this.next = null; this.sharpen = true; this.changed(); }, REDRAW_AFTER_MS);
    }
    if (!this.pending) { this.pending = true; requestAnimationFrame(() => this.draw()); }
  }
  restyle() { this.next = null; this.sharpen = true; this.changed(); } // opacity changed: everything is redrawn

  // ------------------------------------------------------------------ nuclei
  clear() {
    this.nuclei.clear(); this.grid.clear(); this.selected.clear(); this.markers = [];
    this.cacheValid = false; this.next = null; this.changed();
  }
  cellsOf(b) {
    const out = [];
    for (let cy = Math.floor(b[0] / CELL); cy <= Math.floor((b[2] - 1) / CELL); cy++)
      for (let cx = Math.floor(b[1] / CELL); cx <= Math.floor((b[3] - 1) / CELL); cx++) out.push(cx + "," + cy);
    return out;
  }
  put(id, n) {
    this.drop(id);
    const r = n.ring, path = new Path2D();
    path.moveTo(r[0], r[1]);
    for (let k = 2; k < r.length; k += 2) path.lineTo(r[k], r[k + 1]);
    path.closePath();
    const cells = this.cellsOf(n.bbox);
    for (const c of cells) { if (!this.grid.has(c)) this.grid.set(c, new Set()); this.grid.get(c).add(id); }
    this.nuclei.set(id, {path, bbox: n.bbox, area: n.area, cells});
    this.dirty.push(n.bbox);
    if (this.next) this.next.i = 0; // an edit while a bitmap is drawn: draw it again from the start
  }
  drop(id) {
    const n = this.nuclei.get(id);
    if (!n) return;
    for (const c of n.cells) this.grid.get(c)?.delete(id);
    this.nuclei.delete(id); this.selected.delete(id);
    this.dirty.push(n.bbox);
    if (this.next) this.next.i = 0;
  }
  load(payload) {
    this.clear();
    for (const [k, n] of Object.entries(payload.nuclei)) this.put(+k, n);
    this.dirty = []; this.cacheValid = false; this.next = null; this.changed();
  }
  apply(delta) {
    for (const id of delta.removed) this.drop(id);
    for (const [k, n] of Object.entries(delta.nuclei)) this.put(+k, n);
    this.changed();
  }
  idsIn(y0, x0, y1, x1) {
    if ((y1 - y0) * (x1 - x0) >= 0.5 * this.W * this.H) return this.nuclei.keys();
    const ids = new Set();
    for (const c of this.cellsOf([Math.max(0, y0), Math.max(0, x0), Math.min(this.H, y1), Math.min(this.W, x1)]))
      for (const id of this.grid.get(c) || []) ids.add(id);
    return ids;
  }
  hit(u, v) {
    const c = Math.floor(u / CELL) + "," + Math.floor(v / CELL);
    let best = 0, area = Infinity;
    for (const id of this.grid.get(c) || []) {
      const n = this.nuclei.get(id);
      if (n.area < area && this.probe.isPointInPath(n.path, u, v)) { best = id; area = n.area; }
    }
    return best;
  }

  // ------------------------------------------------------------------ drawing
  // Fill (one colour per id bucket, to tell neighbours apart) and outline the nuclei ``ids`` on ``ctx`` whose
  // transform maps image pixels to device pixels at ``scale``; returns how many were drawn.
  paint(ctx, ids, scale, box) {
    const fills = COLOURS.map(() => new Path2D()), all = new Path2D();
    let drawn = 0;
    for (const id of ids) {
      const n = this.nuclei.get(id), b = n.bbox;
      if (box && (b[2] < box[0] || b[0] > box[2] || b[3] < box[1] || b[1] > box[3])) continue;
      fills[id % COLOURS.length].addPath(n.path); all.addPath(n.path); drawn++;
    }
    if (this.fillAlpha > 0) {
      ctx.globalAlpha = this.fillAlpha;
      fills.forEach((p, k) => { ctx.fillStyle = COLOURS[k]; ctx.fill(p); });
    }
    if (this.contourAlpha > 0) {
      ctx.globalAlpha = this.contourAlpha; ctx.lineWidth = 1.5 / scale; ctx.strokeStyle = COLOURS[0]; ctx.stroke(all);
    }
    ctx.globalAlpha = 1;
    return drawn;
  }

  // Draw the next slice of the bitmap being built (started when none is valid or a sharper one is wanted);
  // swap it in when complete. Returns true while work remains.
  build(scale) {
    if (!this.next) {
      const c = document.createElement("canvas");
      c.width = Math.max(1, Math.ceil(this.W * scale)); c.height = Math.max(1, Math.ceil(this.H * scale));
      const g = c.getContext("2d");
      g.setTransform(scale, 0, 0, scale, 0, 0);
      this.next = {canvas: c, g, scale, ids: [...this.nuclei.keys()], i: 0};
      this.sharpen = false;
    }
    const n = this.next, t0 = performance.now();
    if (n.i === 0) { n.g.clearRect(0, 0, this.W, this.H); n.ids = [...this.nuclei.keys()]; }
    while (n.i < n.ids.length && performance.now() - t0 < SLICE_MS) {
      this.paint(n.g, n.ids.slice(n.i, n.i + CHUNK).filter((id) => this.nuclei.has(id)), n.scale, null);
      n.i += CHUNK;
    }
    if (n.i < n.ids.length) return true;
    this.cache = n.canvas; this.cacheScale = n.scale; this.cacheValid = true; this.next = null; this.dirty = [];
    return false;
  }

  // Redraw only the rectangles that edits touched, on the bitmap shown.
  patch() {
    const g = this.cache.getContext("2d"), k = this.cacheScale, pad = 3 / k;  // a line's half-width
    for (const b of this.dirty) {
      const box = [b[0] - pad, b[1] - pad, b[2] + pad, b[3] + pad];
      g.save();
      g.setTransform(k, 0, 0, k, 0, 0);
      g.beginPath(); g.rect(box[1], box[0], box[3] - box[1], box[2] - box[0]); g.clip();
      g.clearRect(box[1], box[0], box[3] - box[1], box[2] - box[0]);
      this.paint(g, this.idsIn(box[0] - 1, box[1] - 1, box[2] + 1, box[3] + 1), k, box);
      g.restore();
    }
    this.dirty = [];
  }

  draw() {
    this.pending = false;
    const t0 = performance.now(), ctx = this.ctx, dpr = window.devicePixelRatio || 1, scale = this.s * dpr;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    let drawn;
    if (Math.max(this.W, this.H) * scale <= CACHE_MAX) {
      let more = false;
      if (!this.cacheValid || this.sharpen || this.next) more = this.build(this.next ? this.next.scale : scale);
      if (this.cacheValid && this.dirty.length) this.patch();
      const shown = this.cacheValid ? this.cache : this.next.canvas, k = scale / (this.cacheValid ? this.cacheScale
        : this.next.scale);
      ctx.drawImage(shown, dpr * this.tx, dpr * this.ty, shown.width * k, shown.height * k);
      drawn = this.cacheValid ? this.nuclei.size : Math.min(this.next.i, this.nuclei.size);
      if (more && !this.pending) { this.pending = true; requestAnimationFrame(() => this.draw()); }
    } else {
      this.cacheValid = false; this.next = null; this.dirty = [];
      ctx.setTransform(scale, 0, 0, scale, dpr * this.tx, dpr * this.ty);
      const [x0, y0] = this.toImage(0, 0), [x1, y1] = this.toImage(this.canvas.width / dpr, this.canvas.height / dpr);
      drawn = this.paint(ctx, this.idsIn(y0, x0, y1, x1), this.s, [y0, x0, y1, x1]);
    }
    ctx.setTransform(scale, 0, 0, scale, dpr * this.tx, dpr * this.ty);
    if (this.selected.size) {
      const sel = new Path2D();
      for (const id of this.selected) sel.addPath(this.nuclei.get(id).path);
      ctx.lineWidth = 3 / this.s; ctx.strokeStyle = SELECTED; ctx.stroke(sel);
    }
    ctx.fillStyle = "#ff2d2d";
    for (const [x, y] of this.markers) { ctx.beginPath(); ctx.arc(x + 0.5, y + 0.5, 4 / this.s, 0, 7); ctx.fill(); }
    this.drawMs = performance.now() - t0;
    this.canvas.dataset.contours = this.nuclei.size;
    this.canvas.dataset.drawn = drawn;
    this.canvas.dataset.drawMs = this.drawMs.toFixed(2);
  }
}
