// Filters that compose (every active one must hold) and the sort order, over the index's columns.
// Whether a face trains comes from the server (the faceset reader's statuses): it is read here,
// never worked out again.

export function emptyFilters() {
  return {
    status: "", reason: "", label: "", group: "", selected: "", light: "",
    measure: "", verdict: "bad", text: "", tag: "", trainLoss: "",
    sharpMin: null, sharpMax: null, brightMin: null, brightMax: null, sizeMin: null, sizeMax: null,
    pose: null,      // {yaw, pitch}: lower edges of a heat-map cell
    sql: null,       // Set of face indices a WHERE clause kept
    lasso: null,     // Set of face indices chosen on the map
  };
}

export function poseCell(yaw, pitch, bins) {
  // The `coverage` view's bins: floor to the bin width, faces past the range belong to no cell.
  const [yawLow, yawHigh] = bins.yaw_range, [pitchLow, pitchHigh] = bins.pitch_range;
  if (yaw === null || pitch === null || yaw < yawLow || yaw > yawHigh || pitch < pitchLow || pitch > pitchHigh) return null;
  const y = Math.min(Math.floor(yaw / bins.yaw_bin) * bins.yaw_bin, yawHigh - bins.yaw_bin);
  const p = Math.min(Math.floor(pitch / bins.pitch_bin) * bins.pitch_bin, pitchHigh - bins.pitch_bin);
  return [y, p];
}

// curate.training_loss.HARD_RATIO: a face this many times the median running loss is "hard".
export const HARD_RATIO = 1.3;

// The model's per-face training losses (/api/training-loss) as index columns, null where a face has none.
export function addTrainingLoss(data, losses) {
  const n = data.columns.id.length, byId = new Map(data.columns.id.map((id, i) => [id, i]));
  const loss = new Array(n).fill(null), ratio = new Array(n).fill(null), rank = new Array(n).fill(null);
  const seen = new Array(n).fill(null);
  losses.ids.forEach((id, k) => {
    const i = byId.get(id);
    if (i === undefined) return;
    loss[i] = losses.loss[k]; ratio[i] = losses.ratio[k]; rank[i] = k + 1; seen[i] = losses.seen[k];
  });
  Object.assign(data.columns, { train_loss: loss, train_ratio: ratio, train_rank: rank, train_seen: seen });
  data.trainingLoss = { model_dir: losses.model_dir, side: losses.side, iteration: losses.iteration, median: losses.median };
}

const VERDICT_TESTS = {
  bad: (letter) => letter === "b",
  warn: (letter) => letter === "w",
  notok: (letter) => letter === "b" || letter === "w",
  ok: (letter) => letter === "o",
};

// One predicate per active filter; `skipPose` leaves the pose filter out (for the heat map's counts).
export function predicates(filters, data, skipPose = false) {
  const c = data.columns, tests = [];
  const f = filters;
  if (f.status === "trains") tests.push((i) => c.trains[i]);
  if (f.status === "out") tests.push((i) => !c.trains[i]);
  if (f.status === "decided") tests.push((i) => c.decided[i] || c.inclusion[i] !== "" || c.hand_label[i] !== "" || c.keeper[i] || c.tags[i].length > 0);
  if (f.status === "excluded") tests.push((i) => c.inclusion[i] === "exclude");
  if (f.reason) tests.push((i) => c.reason_kinds[i].split(",").includes(f.reason));
  if (f.label === "none") tests.push((i) => c.label[i] === "");
  else if (f.label) tests.push((i) => (c.hand_label[i] || c.label[i]) === f.label);
  if (f.group === "*in") tests.push((i) => c.group[i] !== "");
  else if (f.group === "*kept") tests.push((i) => c.group[i] !== "" && c.keep[i]);
  else if (f.group === "*dropped") tests.push((i) => c.group[i] !== "" && !c.keep[i]);
  else if (f.group === "*none") tests.push((i) => c.group[i] === "");
  else if (f.group) tests.push((i) => c.group[i] === f.group);
  if (f.selected === "yes") tests.push((i) => c.pick[i] !== null);
  if (f.selected === "no") tests.push((i) => c.pick[i] === null);
  if (f.light) tests.push((i) => c.light[i] === f.light);
  if (f.measure) {
    const at = data.measures.indexOf(f.measure), test = VERDICT_TESTS[f.verdict] || VERDICT_TESTS.bad;
    tests.push((i) => test(c.verdicts[i][at]));
  }
  if (f.trainLoss && c.train_rank) {
    if (f.trainLoss === "top10") tests.push((i) => c.train_rank[i] !== null && c.train_rank[i] <= 10);
    if (f.trainLoss === "top50") tests.push((i) => c.train_rank[i] !== null && c.train_rank[i] <= 50);
    if (f.trainLoss === "hard") tests.push((i) => c.train_ratio[i] !== null && c.train_ratio[i] >= HARD_RATIO);
    if (f.trainLoss === "none") tests.push((i) => c.train_rank[i] === null);
  }
  if (f.text) { const needle = f.text.toLowerCase(); tests.push((i) => c.path[i].toLowerCase().includes(needle)); }
  if (f.tag) { const tag = f.tag.toLowerCase(); tests.push((i) => c.tags[i].some((t) => t.toLowerCase().includes(tag))); }
  const range = (column, low, high) => {
    if (low !== null) tests.push((i) => column[i] !== null && column[i] >= low);
    if (high !== null) tests.push((i) => column[i] !== null && column[i] <= high);
  };
  range(c.sharpness, f.sharpMin, f.sharpMax);
  range(c.brightness, f.brightMin, f.brightMax);
  range(c.size, f.sizeMin, f.sizeMax);
  if (f.pose && !skipPose) {
    const bins = data.faceset.pose_bins, want = f.pose;
    tests.push((i) => { const cell = poseCell(c.yaw[i], c.pitch[i], bins); return cell !== null && cell[0] === want.yaw && cell[1] === want.pitch; });
  }
  if (f.sql) tests.push((i) => f.sql.has(i));
  if (f.lasso) tests.push((i) => f.lasso.has(i));
  return tests;
}

export function matching(filters, data, skipPose = false) {
  const tests = predicates(filters, data, skipPose), out = [];
  const n = data.columns.id.length;
  outer: for (let i = 0; i < n; i++) {
    for (const test of tests) if (!test(i)) continue outer;
    out.push(i);
  }
  return out;
}

export function sortIndices(indices, key, descending, data) {
  const column = data.columns[key] || data.columns.id;
  const sign = descending ? -1 : 1;
  // Unknown values (null) sort last either way; ties keep face-id order.
  return indices.sort((a, b) => {
    const x = column[a], y = column[b];
    if (x === y) return a - b;
    if (x === null) return 1;
    if (y === null) return -1;
    return (x < y ? -1 : 1) * sign;
  });
}
