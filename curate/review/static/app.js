// The review page: loads the face index once, filters and sorts it here, and sends decisions to
// the server, which records them and answers with the faces' new statuses (the reader's word).

import { getJson, postJson } from "./api.js";
import { DuplicateView } from "./duplicates.js";
import { addTrainingLoss, emptyFilters, matching, sortIndices } from "./filters.js";
import { Grid } from "./grid.js";
import { renderHeatmap } from "./heatmap.js";
import { EmbeddingMap } from "./map.js";
import { showPanel } from "./panel.js";

const $ = (id) => document.getElementById(id);

const state = {
  data: null,
  byId: new Map(),
  filters: emptyFilters(),
  sort: { key: "id", descending: false },
  order: [],
  focus: -1,
  anchor: -1,
  selection: new Set(),
  pending: new Set(),
  view: "grid",
  groups: null,
};

// What the benchmark and the browser tests read: timings and the state of the page.
const probe = { firstPaint: null, indexLoaded: null, lastFilterMs: null, filters: 0, decisions: 0, state };
window.__review = probe;

const grid = new Grid($("grid"), $("grid-spacer"), { onClick: (index, event) => clicked(index, event) });
probe.grid = grid;
const duplicateView = new DuplicateView($("duplicates"), { onClick: (index, event) => clicked(index, event) });
const map = new EmbeddingMap($("map-canvas"), $("map-hover"), {
  onSelect: (chosen, additive) => {
    if (!additive) state.selection.clear();
    for (const i of chosen) state.selection.add(i);
    say(`${state.selection.size} faces selected on the map`);
    redraw();
  },
  onFocus: (index) => focus(index),
});

function say(text, error = false) {
  $("message").textContent = text;
  $("message").style.color = error ? "" : "var(--muted)";
}

// -- loading ----------------------------------------------------------------------------------

async function load() {
  const started = performance.now();
  probe.scriptStarted = started;
  // asked for beside the index, not after it: the small answer is in before the index is parsed
  const losses = getJson("/api/training-loss").catch((error) => ({ available: false, failed: error.message }));
  const data = await getJson("/api/faces", () => say("the faceset is busy (another facesmith command is writing it); waiting…"));
  probe.indexLoaded = performance.now() - started;
  state.data = data;
  state.byId = new Map(data.columns.id.map((id, i) => [id, i]));
  document.title = `${data.faceset.name} · facesmith review`;
  $("title").textContent = `${data.faceset.name} (${data.faceset.role})`;
  const measures = $("f-measure");
  measures.replaceChildren(new Option("any measure", ""), ...data.measures.map((m) => new Option(m, m)));
  measures.value = state.filters.measure;
  showTrainingLoss(data, await losses);
  probe.indexParsed = performance.now();
  apply();
  probe.applied = performance.now();
  await grid.whenPainted();
  probe.firstPaint = performance.now();
  document.body.dataset.painted = "1";
}

// The model's per-face training losses, when the app was started with --model-dir: a column to sort
// and filter by (the faces the model cannot learn), shown in the captions and the side panel.
function showTrainingLoss(data, losses) {
  if (losses.failed) {
    say(`training losses not loaded: ${losses.failed}`, true);
    return;
  }
  if (!losses.available) {
    if (losses.model_dir) say(losses.note, true); // started with --model-dir, but it has none to show
    return;
  }
  addTrainingLoss(data, losses);
  $("f-train-loss-label").hidden = false;
  const sort = $("sort-key");
  if (![...sort.options].some((o) => o.value === "train_loss")) sort.append(new Option("training loss", "train_loss"));
  $("title").textContent += ` · training loss at ${losses.iteration}`;
  $("title").title = `running loss per face (${losses.side}) from ${losses.model_dir}, median ${losses.median}`;
}

// -- filtering --------------------------------------------------------------------------------

function apply() {
  const started = performance.now();
  const data = state.data;
  const focused = state.focus;
  const position = state.order.indexOf(focused);
  state.order = sortIndices(matching(state.filters, data), state.sort.key, state.sort.descending, data);
  // keep the focus on its face, or on the face that took its place when it left the view
  if (focused >= 0 && !state.order.includes(focused)) {
    state.focus = state.order.length ? state.order[Math.min(Math.max(position, 0), state.order.length - 1)] : -1;
  }
  renderHeatmap($("heatmap"), data, matching(state.filters, data, true), state.filters.pose, pickCell);
  const pose = state.filters.pose;
  $("pose-chosen").textContent = pose ? `yaw ${pose.yaw}°, pitch ${pose.pitch}° (click again to clear)` : "";
  $("lasso-note").textContent = state.filters.lasso ? `showing the ${state.filters.lasso.size} faces chosen on the map` : "";
  redraw(true);
  probe.lastFilterMs = performance.now() - started;
  probe.filters += 1;
  updateCounts();
  if (state.focus >= 0) panelFor(state.focus);
}

function redraw(layout = false) {
  const visible = new Set(state.order);
  if (state.view === "grid") (layout ? grid.show(state.data, state.order, state) : grid.refresh());
  if (state.view === "duplicates") {
    if (state.groups && layout) duplicateView.show(state.groups, state.data, visible, state);
    else duplicateView.refresh();
  }
  if (state.view === "map") map.show(state.data, state.order, state);
  updateCounts();
}

function updateCounts() {
  const c = state.data.columns, total = c.id.length;
  const trains = c.trains.filter(Boolean).length;
  $("counts").textContent = `${total} faces · ${trains} train · ${state.data.faceset.images} images ` +
    `(${state.data.faceset.images_rejected} rejected, ${state.data.faceset.images_without_faces} without faces)`;
  $("status").textContent = `${state.order.length} shown · ${state.selection.size} selected · ` +
    `filtered in ${probe.lastFilterMs === null ? "–" : probe.lastFilterMs.toFixed(1)} ms`;
  $("status").dataset.shown = state.order.length;
}

function pickCell(yaw, pitch) {
  const pose = state.filters.pose;
  state.filters.pose = pose && pose.yaw === yaw && pose.pitch === pitch ? null : { yaw, pitch };
  apply();
}

function number(id) {
  const value = $(id).value.trim();
  return value === "" || Number.isNaN(Number(value)) ? null : Number(value);
}

function readControls() {
  const f = state.filters;
  f.status = $("f-status").value; f.reason = $("f-reason").value; f.label = $("f-label").value;
  const group = $("f-group").value;
  if (group || !f.group || f.group.startsWith("*")) f.group = group; // keep a group chosen from the panel
  f.selected = $("f-selected").value; f.light = $("f-light").value;
  f.measure = $("f-measure").value; f.verdict = $("f-verdict").value;
  f.text = $("f-text").value.trim(); f.tag = $("f-tag").value.trim(); f.trainLoss = $("f-train-loss").value;
  f.sharpMin = number("f-sharp-min"); f.sharpMax = number("f-sharp-max");
  f.brightMin = number("f-bright-min"); f.brightMax = number("f-bright-max");
  f.sizeMin = number("f-size-min"); f.sizeMax = number("f-size-max");
  state.sort = { key: $("sort-key").value, descending: $("sort-desc").checked };
  apply();
}

for (const id of ["f-status", "f-reason", "f-label", "f-group", "f-selected", "f-light", "f-measure", "f-verdict", "f-train-loss", "sort-key", "sort-desc"]) {
  $(id).addEventListener("change", readControls);
}
for (const id of ["f-text", "f-tag", "f-sharp-min", "f-sharp-max", "f-bright-min", "f-bright-max", "f-size-min", "f-size-max"]) {
  $(id).addEventListener("input", readControls);
}

$("reset-filters").addEventListener("click", () => {
  state.filters = emptyFilters();
  for (const control of document.querySelectorAll("#filters select, #filters input")) {
    if (control.type === "checkbox") control.checked = false;
    else if (control.id === "f-verdict") control.value = "bad";
    else control.value = control.tagName === "SELECT" ? control.options[0].value : "";
  }
  $("f-sql").value = "";
  $("sql-message").textContent = "";
  readControls();
});

async function applySql() {
  const where = $("f-sql").value.trim();
  if (!where) { clearSql(); return; }
  $("sql-message").textContent = "running…";
  const started = performance.now();
  try {
    const result = await postJson("/api/query", { where });
    state.filters.sql = new Set(result.ids.map((id) => state.byId.get(id)).filter((i) => i !== undefined));
    apply();
    probe.lastSqlMs = performance.now() - started;
    $("sql-message").textContent = `${result.count} faces match (${result.ms} ms in the database)`;
    $("sql-message").style.color = "var(--muted)";
  } catch (error) {
    $("sql-message").textContent = error.message;
    $("sql-message").style.color = "";
  }
}

function clearSql() {
  state.filters.sql = null;
  $("sql-message").textContent = "";
  apply();
}

$("sql-apply").addEventListener("click", applySql);
$("sql-clear").addEventListener("click", () => { $("f-sql").value = ""; clearSql(); });
$("f-sql").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); applySql(); }
});

// -- views, focus and selection ---------------------------------------------------------------

async function setView(view) {
  state.view = view;
  for (const button of document.querySelectorAll("#views button")) button.classList.toggle("on", button.dataset.view === view);
  $("grid").hidden = view !== "grid";
  $("duplicates").hidden = view !== "duplicates";
  $("map").hidden = view !== "map";
  if (view === "duplicates" && state.groups === null) {
    state.groups = await getJson("/api/duplicates");
  }
  redraw(true);
}

for (const button of document.querySelectorAll("#views button")) button.addEventListener("click", () => setView(button.dataset.view));

$("map-show").addEventListener("click", () => {
  state.filters.lasso = state.selection.size ? new Set(state.selection) : null;
  setView("grid").then(apply);
});

function focus(index, scroll = true) {
  state.focus = index;
  if (scroll && state.view === "grid") grid.scrollToPosition(state.order.indexOf(index));
  redraw();
  panelFor(index);
}

let panelTimer = null;
function panelFor(index) {
  const panel = $("panel"), id = state.data.columns.id[index];
  if (panel.dataset.wanted === id) return;
  panel.dataset.wanted = id;
  clearTimeout(panelTimer); // arrow keys held down: load the panel once they stop
  panelTimer = setTimeout(() => showPanel(panel, id, {
    buttons: [["exclude", "x", () => decide("exclude")], ["include", "i", () => decide("include")],
      ["keeper", "k", () => decide("keeper")], ["main person", "m", () => decide("label", "main")],
      ["other person", "o", () => decide("label", "other-person")], ["automatic label", "a", () => decide("label", null)],
      ["tag…", "t", () => tag("tag")], ["reset", "u", () => decide("reset")]],
    showGroup: (group) => { state.filters.group = group; $("f-group").value = ""; setView("grid").then(apply); },
  }), 120);
}

function clicked(index, event) {
  if (event.shiftKey && state.anchor >= 0) {
    selectRange(state.anchor, index);
  } else if (event.ctrlKey || event.metaKey) {
    state.selection.has(index) ? state.selection.delete(index) : state.selection.add(index);
    state.anchor = index;
  } else {
    state.anchor = index;
  }
  focus(index, false);
}

function selectRange(from, to) {
  const a = state.order.indexOf(from), b = state.order.indexOf(to);
  if (a < 0 || b < 0) return;
  for (let p = Math.min(a, b); p <= Math.max(a, b); p++) state.selection.add(state.order[p]);
}

function move(step, extend) {
  if (!state.order.length) return;
  const position = state.order.indexOf(state.focus);
  const next = position < 0 ? 0 : Math.min(Math.max(position + step, 0), state.order.length - 1);
  const index = state.order[next];
  if (extend) {
    if (state.anchor < 0) state.anchor = state.focus >= 0 ? state.focus : index;
    state.selection.add(state.focus >= 0 ? state.focus : index);
    selectRange(state.anchor, index);
  } else {
    state.anchor = index;
  }
  focus(index);
}

// -- decisions --------------------------------------------------------------------------------

function targets() {
  if (state.selection.size) return [...state.selection];
  return state.focus >= 0 ? [state.focus] : [];
}

async function decide(action, value = null, why = null) {
  const chosen = targets();
  if (!chosen.length) { say("choose a face first (click it or use the arrow keys)", true); return; }
  const c = state.data.columns;
  const decisions = chosen.map((i) => ({ face_id: c.id[i], action, value, why: why || "review app" }));
  for (const i of chosen) state.pending.add(i);
  redraw();
  const started = performance.now();
  try {
    const answer = await postJson("/api/decisions", { decisions },
      () => say("the faceset is busy (another facesmith command is writing it); retrying…"));
    const s = answer.statuses;
    s.id.forEach((id, k) => {
      const i = state.byId.get(id);
      for (const column of ["trains", "reason", "reason_kinds", "decided", "inclusion", "hand_label", "keeper", "tags"]) {
        c[column][i] = s[column][k];
      }
    });
    probe.decisions += answer.recorded;
    probe.lastDecisionMs = performance.now() - started;
    say(`${action}${value ? " " + value : ""}: ${answer.recorded} face${answer.recorded === 1 ? "" : "s"} recorded`);
  } catch (error) {
    say(`not recorded: ${error.message}`, true);
  } finally {
    for (const i of chosen) state.pending.delete(i);
  }
  if (action === "keeper") state.groups = null; // keeper changes show after analyze: refetch lazily
  const panel = $("panel");
  panel.dataset.wanted = "";
  apply();
}

function tag(action) {
  const text = prompt(action === "tag" ? "Tag the faces with:" : "Remove the tag:");
  if (text && text.trim()) decide(action, text.trim());
}

// -- keys -------------------------------------------------------------------------------------

function typing(event) {
  const t = event.target;
  return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT");
}

document.addEventListener("keydown", (event) => {
  if (!state.data || typing(event) || event.altKey) return;
  const key = event.key;
  const columns = state.view === "grid" ? grid.columns : 1;
  const keys = {
    ArrowRight: () => move(1, event.shiftKey), ArrowLeft: () => move(-1, event.shiftKey),
    ArrowDown: () => move(columns, event.shiftKey), ArrowUp: () => move(-columns, event.shiftKey),
    " ": () => { if (state.focus >= 0) { state.selection.has(state.focus) ? state.selection.delete(state.focus) : state.selection.add(state.focus); redraw(); updateCounts(); } },
    Escape: () => { state.selection.clear(); $("help").hidden = true; redraw(); updateCounts(); },
    x: () => decide("exclude"),
    X: () => { const why = prompt("Why exclude?"); if (why !== null) decide("exclude", null, why || null); },
    i: () => decide("include"), k: () => decide("keeper"),
    m: () => decide("label", "main"), o: () => decide("label", "other-person"), a: () => decide("label", null),
    t: () => tag("tag"), T: () => tag("untag"), u: () => decide("reset"),
    g: () => setView("grid"), d: () => setView("duplicates"), e: () => setView("map"),
    "?": () => { $("help").hidden = !$("help").hidden; },
    "/": () => $("f-sql").focus(),
  };
  if ((event.ctrlKey || event.metaKey) && key.toLowerCase() === "a") {
    event.preventDefault();
    for (const i of state.order) state.selection.add(i);
    redraw(); updateCounts();
    return;
  }
  if (event.ctrlKey || event.metaKey) return;
  const action = keys[key];
  if (action) { event.preventDefault(); action(); }
});

$("help-button").addEventListener("click", () => { $("help").hidden = !$("help").hidden; });
$("help-close").addEventListener("click", () => { $("help").hidden = true; });

load().catch((error) => say(`cannot load the faceset: ${error.message}`, true));
