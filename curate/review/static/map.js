// The 2-D embeddings map on a canvas: one dot per face shown, coloured by identity label; hover
// shows the face, a drag draws a lasso that selects the faces inside it (Shift adds to the selection).

import { thumbnailUrl } from "./api.js";

const COLOURS = { main: "#2b6cb0", "other-person": "#c05621", outlier: "#6b46c1", "": "#718096" };
const PAD = 24;

export function insidePolygon(x, y, polygon) {
  // Even-odd rule: count the polygon edges a ray from (x, y) to the right crosses.
  let inside = false;
  for (let i = 0, j = polygon.length - 1; i < polygon.length; j = i++) {
    const [xi, yi] = polygon[i], [xj, yj] = polygon[j];
    if ((yi > y) !== (yj > y) && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

export class EmbeddingMap {
  constructor(canvas, hover, { onSelect, onFocus }) {
    this.canvas = canvas;
    this.hover = hover;
    this.onSelect = onSelect;
    this.onFocus = onFocus;
    this.indices = [];
    this.lasso = null;
    canvas.addEventListener("mousedown", (event) => { this.lasso = [this.point(event)]; this.additive = event.shiftKey; });
    canvas.addEventListener("mousemove", (event) => this.move(event));
    canvas.addEventListener("mouseup", (event) => this.finish(event));
    canvas.addEventListener("mouseleave", () => { this.hover.hidden = true; });
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  point(event) {
    const box = this.canvas.getBoundingClientRect();
    return [event.clientX - box.left, event.clientY - box.top];
  }

  show(data, indices, state) {
    this.data = data;
    this.indices = indices;
    this.state = state;
    this.draw();
  }

  place(i) {
    const c = this.data.columns, w = this.canvas.clientWidth, h = this.canvas.clientHeight;
    return [PAD + ((c.x[i] + 1) / 2) * (w - 2 * PAD), PAD + ((1 - c.y[i]) / 2) * (h - 2 * PAD)];
  }

  draw() {
    if (!this.data || this.canvas.clientWidth === 0) return;
    const ratio = window.devicePixelRatio || 1, w = this.canvas.clientWidth, h = this.canvas.clientHeight;
    this.canvas.width = w * ratio;
    this.canvas.height = h * ratio;
    const g = this.canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, w, h);
    const c = this.data.columns;
    this.cells = new Map(); // a coarse grid of screen cells -> faces, for the hover lookup
    for (const i of this.indices) {
      if (c.x[i] === null) continue;
      const [px, py] = this.place(i);
      const label = c.hand_label[i] || c.label[i];
      g.fillStyle = COLOURS[label] || COLOURS[""];
      g.globalAlpha = c.trains[i] ? 0.85 : 0.35;
      g.fillRect(px - 2, py - 2, 4, 4);
      if (this.state.selection.has(i)) { g.globalAlpha = 1; g.strokeStyle = "#d69e2e"; g.strokeRect(px - 3.5, py - 3.5, 7, 7); }
      const key = `${Math.floor(px / 12)},${Math.floor(py / 12)}`;
      if (!this.cells.has(key)) this.cells.set(key, []);
      this.cells.get(key).push(i);
    }
    g.globalAlpha = 1;
    let y = 16;
    for (const [label, colour] of Object.entries(COLOURS)) {
      g.fillStyle = colour; g.fillRect(8, y - 7, 8, 8);
      g.fillStyle = "#1a202c"; g.font = "11px system-ui"; g.fillText(label || "not analysed", 20, y);
      y += 14;
    }
    if (this.lasso && this.lasso.length > 1) {
      g.strokeStyle = "#d69e2e"; g.lineWidth = 1.5; g.beginPath();
      this.lasso.forEach(([x, yy], k) => (k ? g.lineTo(x, yy) : g.moveTo(x, yy)));
      g.stroke();
    }
  }

  nearest([x, y]) {
    let best = -1, bestDistance = 64; // within 8 px
    for (let dx = -1; dx <= 1; dx++) for (let dy = -1; dy <= 1; dy++) {
      for (const i of this.cells.get(`${Math.floor(x / 12) + dx},${Math.floor(y / 12) + dy}`) || []) {
        const [px, py] = this.place(i), d = (px - x) ** 2 + (py - y) ** 2;
        if (d < bestDistance) { best = i; bestDistance = d; }
      }
    }
    return best;
  }

  move(event) {
    const at = this.point(event);
    if (this.lasso) { this.lasso.push(at); this.draw(); return; }
    const i = this.cells ? this.nearest(at) : -1;
    if (i < 0) { this.hover.hidden = true; return; }
    const c = this.data.columns;
    this.hover.replaceChildren();
    const img = document.createElement("img");
    img.src = thumbnailUrl(c.id[i]);
    const caption = document.createElement("div");
    caption.textContent = `${c.path[i]} #${c.index[i]}`;
    this.hover.append(img, caption);
    this.hover.style.left = `${Math.min(at[0] + 12, this.canvas.clientWidth - 110)}px`;
    this.hover.style.top = `${Math.min(at[1] + 12, this.canvas.clientHeight - 130)}px`;
    this.hover.hidden = false;
  }

  finish(event) {
    const path = this.lasso;
    this.lasso = null;
    if (!path) return;
    if (path.length < 4) { // a click, not a lasso: focus the face under the pointer
      const i = this.nearest(this.point(event));
      if (i >= 0) this.onFocus(i);
      this.draw();
      return;
    }
    const chosen = this.indices.filter((i) => this.data.columns.x[i] !== null && insidePolygon(...this.place(i), path));
    this.onSelect(chosen, this.additive);
  }
}
