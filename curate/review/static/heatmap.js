// The yaw × pitch heat map: a count in every cell, a colour scale with its legend, and a click on
// a cell to filter the faces to it (click it again to clear).

import { poseCell } from "./filters.js";

const SVG = "http://www.w3.org/2000/svg";
const LOW = [238, 244, 251], HIGH = [8, 48, 107];

function node(name, attributes = {}, text = null) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  if (text !== null) element.textContent = text;
  return element;
}

export function shade(count, peak) {
  // Square-root scale: a few very full cells would otherwise wash every other cell out.
  const t = peak > 0 ? Math.sqrt(count / peak) : 0;
  const rgb = LOW.map((low, k) => Math.round(low + (HIGH[k] - low) * t));
  return `rgb(${rgb.join(",")})`;
}

export function renderHeatmap(container, data, indices, chosen, onPick) {
  const bins = data.faceset.pose_bins, c = data.columns;
  const yaws = [], pitches = [];
  for (let y = bins.yaw_range[0]; y < bins.yaw_range[1]; y += bins.yaw_bin) yaws.push(y);
  for (let p = bins.pitch_range[1] - bins.pitch_bin; p >= bins.pitch_range[0]; p -= bins.pitch_bin) pitches.push(p);
  const counts = new Map();
  let outside = 0;
  for (const i of indices) {
    const cell = poseCell(c.yaw[i], c.pitch[i], bins);
    if (cell === null) { outside++; continue; }
    const key = `${cell[0]},${cell[1]}`;
    counts.set(key, (counts.get(key) || 0) + 1);
  }
  const peak = Math.max(0, ...counts.values());
  const size = 18, left = 30, top = 6;
  const width = left + yaws.length * size + 4, height = top + pitches.length * size + 52;
  const svg = node("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "faces per yaw and pitch cell" });
  pitches.forEach((pitch, r) => {
    svg.append(node("text", { x: left - 3, y: top + r * size + size * 0.65, "font-size": 7, "text-anchor": "end" }, `${pitch}`));
    yaws.forEach((yaw, k) => {
      const count = counts.get(`${yaw},${pitch}`) || 0;
      const rect = node("rect", {
        x: left + k * size, y: top + r * size, width: size - 1, height: size - 1, class: "cell",
        fill: count ? shade(count, peak) : "#fff", stroke: count ? "none" : "#e53e3e",
        "stroke-dasharray": count ? "" : "2,2", "stroke-width": count ? 0 : 0.6,
        "data-yaw": yaw, "data-pitch": pitch, "data-count": count,
      });
      if (chosen && chosen.yaw === yaw && chosen.pitch === pitch) rect.classList.add("chosen");
      rect.append(node("title", {}, `yaw ${yaw}..${yaw + bins.yaw_bin}°, pitch ${pitch}..${pitch + bins.pitch_bin}°: ${count} faces`));
      rect.addEventListener("click", () => onPick(yaw, pitch));
      svg.append(rect);
      if (count) {
        const dark = Math.sqrt(count / peak) > 0.55;
        svg.append(node("text", { x: left + k * size + (size - 1) / 2, y: top + r * size + size * 0.62, "font-size": count > 999 ? 5 : 6.5,
          "text-anchor": "middle", fill: dark ? "#fff" : "#1a202c", "pointer-events": "none" }, `${count}`));
      }
    });
  });
  const bottom = top + pitches.length * size;
  yaws.forEach((yaw, k) => {
    if (k % 2 === 0) svg.append(node("text", { x: left + k * size, y: bottom + 8, "font-size": 7, "text-anchor": "middle" }, `${yaw}`));
  });
  svg.append(node("text", { x: left + (yaws.length * size) / 2, y: bottom + 17, "font-size": 7, "text-anchor": "middle" }, "yaw ° (← image left · right →), rows: pitch °"));
  // the legend: the colour scale from 1 face to the fullest cell, and what an empty cell looks like
  const defs = node("defs");
  const gradient = node("linearGradient", { id: "heat-scale" });
  for (let s = 0; s <= 4; s++) gradient.append(node("stop", { offset: `${s * 25}%`, "stop-color": shade((s / 4) ** 2 * Math.max(peak, 1), Math.max(peak, 1)) }));
  defs.append(gradient);
  svg.append(defs);
  const legendY = bottom + 24;
  svg.append(node("rect", { x: left, y: legendY, width: 10, height: 8, fill: "#fff", stroke: "#e53e3e", "stroke-dasharray": "2,2", "stroke-width": 0.6 }));
  svg.append(node("text", { x: left + 13, y: legendY + 7, "font-size": 7 }, "0"));
  svg.append(node("rect", { x: left + 26, y: legendY, width: 120, height: 8, fill: "url(#heat-scale)" }));
  svg.append(node("text", { x: left + 26, y: legendY + 17, "font-size": 7 }, "1"));
  svg.append(node("text", { x: left + 146, y: legendY + 17, "font-size": 7, "text-anchor": "end" }, `${peak} faces`));
  if (outside) svg.append(node("text", { x: left, y: legendY + 26, "font-size": 7 }, `${outside} without pose or outside the grid`));
  container.replaceChildren(svg);
}
