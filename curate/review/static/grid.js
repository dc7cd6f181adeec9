// The virtualised face grid: only the rows in view (and a few around them) exist in the DOM, so
// 10 000 faces scroll like 100. Tiles are reused as they leave the view.

import { thumbnailUrl } from "./api.js";

const BUFFER_ROWS = 2;

function baseName(path) {
  const cut = path.lastIndexOf("/");
  return cut < 0 ? path : path.slice(cut + 1);
}

export class Grid {
  constructor(element, spacer, { onClick }) {
    this.element = element;
    this.spacer = spacer;
    this.onClick = onClick;
    this.data = null;
    this.order = [];
    this.tiles = new Map(); // position in order -> tile element
    this.pool = [];
    const style = getComputedStyle(document.documentElement);
    this.tile = parseFloat(style.getPropertyValue("--tile")) || 120;
    this.caption = parseFloat(style.getPropertyValue("--caption")) || 34;
    this.gap = parseFloat(style.getPropertyValue("--gap")) || 6;
    this.columns = 1;
    this.scheduled = false;
    element.addEventListener("scroll", () => this.schedule());
    new ResizeObserver(() => this.layout()).observe(element);
  }

  get pitchX() { return this.tile + 2 + this.gap; }
  get pitchY() { return this.tile + this.caption + 2 + this.gap; }

  show(data, order, state) {
    this.data = data;
    this.order = order;
    this.state = state;
    this.layout(true);
  }

  layout(force = false) {
    const width = this.element.clientWidth - this.gap;
    const columns = Math.max(1, Math.floor(width / this.pitchX));
    if (columns !== this.columns || force) {
      this.columns = columns;
      for (const tile of this.tiles.values()) this.release(tile);
      this.tiles.clear();
    }
    this.spacer.style.height = `${Math.ceil(this.order.length / this.columns) * this.pitchY + this.gap}px`;
    this.render();
  }

  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => { this.scheduled = false; this.render(); });
  }

  release(tile) {
    tile.remove();
    this.pool.push(tile);
  }

  make() {
    const tile = this.pool.pop() || document.createElement("div");
    if (!tile.firstChild) {
      tile.className = "tile";
      const img = document.createElement("img");
      img.alt = "";
      img.decoding = "async";
      img.draggable = false;
      const cap = document.createElement("div");
      cap.className = "cap";
      const badge = document.createElement("span");
      badge.className = "badge";
      const hand = document.createElement("span");
      hand.className = "hand";
      tile.append(img, cap, badge, hand);
      tile.addEventListener("click", (event) => this.onClick(Number(tile.dataset.index), event));
    }
    return tile;
  }

  visibleRange() {
    const top = this.element.scrollTop, height = this.element.clientHeight;
    const first = Math.max(0, Math.floor(top / this.pitchY) - BUFFER_ROWS);
    const last = Math.ceil((top + height) / this.pitchY) + BUFFER_ROWS;
    return [first * this.columns, Math.min(this.order.length, last * this.columns)];
  }

  render() {
    if (!this.data) return;
    const [start, end] = this.visibleRange();
    for (const [position, tile] of this.tiles) {
      if (position < start || position >= end) { this.release(tile); this.tiles.delete(position); }
    }
    const fragment = document.createDocumentFragment();
    for (let position = start; position < end; position++) {
      let tile = this.tiles.get(position);
      if (!tile) {
        tile = this.make();
        this.tiles.set(position, tile);
        const row = Math.floor(position / this.columns), column = position % this.columns;
        tile.style.left = `${this.gap + column * this.pitchX}px`;
        tile.style.top = `${this.gap + row * this.pitchY}px`;
        fragment.append(tile);
      }
      this.fill(tile, this.order[position]);
    }
    this.spacer.append(fragment);
  }

  refresh() { for (const [position, tile] of this.tiles) this.fill(tile, this.order[position]); }

  fill(tile, index) {
    const c = this.data.columns, id = c.id[index];
    const [img, cap, badge, hand] = tile.children;
    if (tile.dataset.id !== id) {
      tile.dataset.id = id;
      img.src = thumbnailUrl(id);
    }
    tile.dataset.index = index;
    tile.dataset.trains = c.trains[index] ? "1" : "0";
    tile.dataset.inclusion = c.inclusion[index];
    const name = `${baseName(c.path[index])} #${c.index[index]}`;
    let why = c.trains[index] ? (c.pick[index] !== null ? `pick ${c.pick[index]}` : "trains") : c.reason[index];
    if (c.train_ratio && c.train_ratio[index] !== null) why = `loss ${c.train_ratio[index].toFixed(2)}x · ${why}`;
    if (cap.dataset.text !== name + why) {
      cap.dataset.text = name + why;
      cap.textContent = "";
      const n = document.createElement("div"); n.className = "name"; n.textContent = name;
      const w = document.createElement("div"); w.className = "why"; w.textContent = why;
      cap.append(n, w);
    }
    badge.textContent = c.trains[index] ? "trains" : (c.reason_kinds[index].split(",")[0] || "out");
    const marks = [];
    if (c.inclusion[index]) marks.push(c.inclusion[index]);
    if (c.hand_label[index]) marks.push(c.hand_label[index]);
    if (c.keeper[index]) marks.push("keeper");
    if (c.tags[index].length) marks.push("#" + c.tags[index].join(" #"));
    hand.textContent = marks.join(" ");
    hand.hidden = marks.length === 0;
    tile.classList.toggle("out", !c.trains[index]);
    tile.classList.toggle("keeper", c.keep[index] && c.group[index] !== "");
    tile.classList.toggle("focused", index === this.state.focus);
    tile.classList.toggle("selected", this.state.selection.has(index));
    tile.classList.toggle("pending", this.state.pending.has(index));
    tile.title = tooltip(this.data, index);
  }

  positionOf(index) { return this.order.indexOf(index); }

  scrollToPosition(position) {
    if (position < 0) return;
    const row = Math.floor(position / this.columns);
    const top = this.gap + row * this.pitchY, bottom = top + this.pitchY;
    if (top < this.element.scrollTop) this.element.scrollTop = top - this.gap;
    else if (bottom > this.element.scrollTop + this.element.clientHeight) this.element.scrollTop = bottom - this.element.clientHeight;
    this.render();
  }

  // Resolves once every thumbnail in view has loaded (or failed): the "grid painted" moment.
  whenPainted() {
    const bottom = this.element.scrollTop + this.element.clientHeight;
    const images = [...this.tiles.values()].filter((tile) => parseFloat(tile.style.top) < bottom).map((tile) => tile.firstChild);
    return Promise.all(images.map((img) => (img.complete ? Promise.resolve() : new Promise((resolve) => {
      img.addEventListener("load", resolve, { once: true });
      img.addEventListener("error", resolve, { once: true });
    }))));
  }
}

export function tooltip(data, index) {
  const c = data.columns, lines = [`${c.path[index]}  face ${c.index[index]}  (${c.id[index]})`];
  const label = c.hand_label[index] ? `${c.hand_label[index]} (by hand)` : (c.label[index] || "not analysed");
  lines.push(`identity: ${label}`);
  const bad = [], warn = [];
  data.measures.forEach((m, j) => { const v = c.verdicts[index][j]; if (v === "b") bad.push(m); else if (v === "w") warn.push(m); });
  if (bad.length) lines.push(`bad: ${bad.join(", ")}`);
  if (warn.length) lines.push(`warn: ${warn.join(", ")}`);
  if (c.group[index]) lines.push(c.keep[index] ? "keeps its duplicate group" : `duplicate of ${c.group[index]}`);
  lines.push(c.trains[index] ? "trains" : `left out: ${c.reason[index]}`);
  if (c.train_rank && c.train_rank[index] !== null) {
    lines.push(`training loss ${c.train_loss[index]} (${c.train_ratio[index]}x the median, hardest #${c.train_rank[index]}, seen ${c.train_seen[index]} times)`);
  }
  return lines.join("\n");
}
