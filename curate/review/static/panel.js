// The side panel: one face in full — the crop, the source photo with its box and landmarks drawn,
// every check with its verdict, what analysis said, why it trains or not, and its decisions.

import { cropUrl, faceUrl, getJson, sourceUrl } from "./api.js";

const SVG = "http://www.w3.org/2000/svg";

function element(name, properties = {}, ...children) {
  const e = document.createElement(name);
  for (const [key, value] of Object.entries(properties)) {
    if (key === "class") e.className = value; else e[key] = value;
  }
  e.append(...children.filter((child) => child !== null && child !== undefined));
  return e;
}

function table(rows) {
  return element("table", {}, ...rows.map(([name, value, css]) =>
    element("tr", {}, element("td", {}, name), element("td", css ? { class: css } : {}, value === null || value === undefined ? "–" : String(value)))));
}

function overlay(detail, img) {
  // Box and 68 landmarks, from source pixels to the displayed photo's pixels.
  const svg = document.createElementNS(SVG, "svg");
  const draw = () => {
    const scale = img.naturalWidth / detail.width;
    svg.setAttribute("viewBox", `0 0 ${img.naturalWidth} ${img.naturalHeight}`);
    svg.replaceChildren();
    const [x1, y1, x2, y2] = detail.bbox.map((v) => v * scale);
    const box = document.createElementNS(SVG, "rect");
    for (const [k, v] of Object.entries({ x: x1, y: y1, width: x2 - x1, height: y2 - y1, fill: "none", stroke: "#38a169", "stroke-width": Math.max(2, img.naturalWidth / 300) })) box.setAttribute(k, v);
    svg.append(box);
    for (let k = 0; k + 1 < detail.landmarks.length; k += 2) {
      const dot = document.createElementNS(SVG, "circle");
      for (const [a, v] of Object.entries({ cx: detail.landmarks[k] * scale, cy: detail.landmarks[k + 1] * scale, r: Math.max(1.5, img.naturalWidth / 400), fill: "#e53e3e" })) dot.setAttribute(a, v);
      svg.append(dot);
    }
  };
  img.addEventListener("load", draw, { once: true });
  return svg;
}

function trainingLoss(t) {
  const ratio = t.ratio === null ? "" : `, ${t.ratio}x the median`;
  return `${t.loss}${ratio}; hardest #${t.rank} of ${t.of} ${t.side} faces; seen ${t.seen} times, ` +
    `last ${t.last_loss} at iteration ${t.last_iteration} (snapshot of iteration ${t.iteration})`;
}

export async function showPanel(panel, id, { buttons: actions, showGroup }) {
  panel.replaceChildren(element("p", { class: "hint" }, "loading…"));
  let detail;
  try {
    detail = await getJson(faceUrl(id));
  } catch (error) {
    panel.replaceChildren(element("p", { class: "message" }, String(error.message)));
    return;
  }
  if (panel.dataset.wanted !== id) return; // another face was chosen meanwhile
  const crop = element("img", { class: "crop", src: cropUrl(id), alt: "aligned crop" });
  const photo = element("img", { src: sourceUrl(id), alt: "source photo" });
  const source = element("div", { class: "source" }, photo);
  source.append(overlay(detail, photo));
  photo.addEventListener("error", () => source.replaceWith(element("p", { class: "hint" }, "source photo not available")), { once: true });
  const status = detail.trains
    ? element("p", { class: "trains" }, "trains" + (detail.decided ? " (included by hand)" : ""))
    : element("div", {}, element("p", { class: "out" }, "does not train"),
      element("ul", {}, ...detail.reason.split("; ").map((text) => element("li", {}, text))));
  const buttons = element("div", { class: "actions" }, ...actions.map(([label, key, run]) =>
    element("button", { title: `key ${key}`, onclick: run }, label)));
  const checks = table(detail.checks.map((c) => [c.measure, `${c.value === null ? "–" : c.value} (${c.verdict}, score ${c.score ?? "–"})`, `v-${c.verdict}`]));
  const facts = table([
    ["file", detail.path], ["face", detail.index], ["face id", detail.id],
    ["yaw / pitch / roll", [detail.yaw, detail.pitch, detail.roll].map((v) => (v === null ? "–" : Math.round(v))).join(" / ")],
    ["size (source px)", detail.size === null ? null : Math.round(detail.size)], ["detection score", detail.det],
    ["identity", detail.identity ? `${detail.identity.label} (distance ${detail.identity.distance})` : "not analysed"],
    ["duplicates", detail.duplicate ? (detail.duplicate.keep ? `keeps group (${detail.duplicate.kind})` : detail.duplicate.reason) : "in no group"],
    ["selection", detail.selection ? (detail.selection.selected ? `picked #${detail.selection.pick}` : detail.selection.reason) : "no selection"],
    ...(detail.training_loss ? [["training loss", trainingLoss(detail.training_loss)]] : []),
  ]);
  const history = detail.decisions.length
    ? table(detail.decisions.map((d) => [d.decided_at.slice(0, 19).replace("T", " "), `${d.action}${d.value ? " " + d.value : ""} by ${d.who}${d.why ? ": " + d.why : ""}`]))
    : element("p", { class: "hint" }, "no decisions yet");
  const groupButton = detail.duplicate
    ? element("button", { onclick: () => showGroup(detail.duplicate.group) }, "show its duplicate group")
    : null;
  panel.replaceChildren(...[crop, status, buttons, facts, groupButton, source, element("h3", {}, "checks"), checks,
    element("h3", {}, "decisions"), history].filter((part) => part !== null));
}
