// dishcam page: polls /api/state, listens to /api/events, refreshes the live frame, and talks
// to the API for uploads, teaching and recipe search. No framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const STAGE_COLOURS = ["#2a9d8f", "#e4572e", "#e9c46a", "#8d99ae", "#264653"];

let token = new URLSearchParams(location.search).get("token") || localStorage.getItem("dishcam-token") || "";
let mode = "live"; // or "upload": the dish card shows the uploaded photo's result
let uploaded = null; // the last uploaded File
let lastEventRecipes = null;
let frameLoading = false;

function pretty(label) {
  if (!label) return "-";
  const s = String(label).replace(/_/g, " ");
  return s.charAt(0).toUpperCase() + s.slice(1);
}
function pct(p) { return p == null ? "" : (p * 100).toFixed(1) + " %"; }
function withToken(url) {
  if (!token) return url;
  return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
}
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k === "style") e.style.cssText = v; else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c instanceof Node ? c : String(c));
  return e;
}

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (token) headers["Authorization"] = "Bearer " + token;
  const r = await fetch(path, Object.assign({}, opts, { headers }));
  if (r.status === 401) { $("auth").hidden = false; throw new Error("a token is required"); }
  let body;
  try { body = await r.json(); } catch (_) { body = { error: r.statusText }; }
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

// ---- the dish card ----
function showTop(top) {
  const ol = $("top5");
  ol.replaceChildren();
  // A class the smoother has never seen (all of them, while no dish has been in view) is left
  // out rather than drawn as a bar at 0 %.
  for (const t of (top || []).filter((t) => t.probability > 0).slice(0, 5)) {
    const w = Math.max(1, Math.round(t.probability * 100));
    ol.append(el("li", {},
      el("div", { class: "bar" },
        el("div", { class: "fill", style: "width:" + w + "%" }),
        el("div", { class: "label" }, pretty(t.label))),
      el("span", { class: "pct" }, pct(t.probability))));
  }
}
// What the probabilities on the card are: the live view's are smoothed over recent frames, an
// upload's are of that one photo. The headline and the bars say the same number for a dish.
function probWhat(source) { return source === "live" ? "smoothed" : "this photo"; }
// Why a frame or photo shows no dish (`no_dish` of the API: score, threshold, reason).
function noDishText(n, source) {
  const what = source === "live" ? "this frame" : "this photo";
  if (n.reason === "too-small") return what + ": too small to show a dish";
  return what + ": food score " + pct(n.score) + ", under the " + pct(n.threshold) + " a dish needs";
}
function showDish(name, p, source, noDish) {
  const live = source === "live";
  const title = name ? pretty(name) : noDish ? (live ? "No dish in view" : "No dish in this photo") : live ? "Nothing settled yet" : "-";
  $("dish-name").textContent = title;
  $("dish-name").dataset.dish = name || "";
  $("dish-name").dataset.source = source;
  $("dish-name").dataset.noDish = !name && noDish ? noDish.reason : "";
  $("dish-prob").textContent = name ? pct(p) + ", " + probWhat(source) : noDish ? noDishText(noDish, source) : "";
  $("top-what").textContent = probWhat(source);
}

// ---- recipes ----
function recipeCard(r, open) {
  const d = el("details", { class: "recipe", "data-id": r.id });
  if (open) d.open = true;
  const meta = [r.cuisine, r.total_time_minutes ? r.total_time_minutes + " min" : null, r.servings ? r.servings + " servings" : null].filter(Boolean).join(" · ");
  d.append(el("summary", {}, r.title, meta ? el("span", { class: "meta" }, meta) : null));
  if (r.ingredients && r.ingredients.length) {
    d.append(el("h3", {}, "Ingredients"), el("ul", {}, ...r.ingredients.map((i) => el("li", {}, i))));
  }
  if (r.steps && r.steps.length) {
    d.append(el("h3", {}, "Steps"), el("ol", {}, ...r.steps.map((s) => el("li", {}, s))));
  }
  return d;
}
async function showRecipes(recipes, dish, noDish) {
  const box = $("recipes");
  $("recipes-for").textContent = dish ? "for " + pretty(dish) : "";
  box.replaceChildren();
  if (!recipes || !recipes.length) {
    const why = dish ? "No recipe for this dish yet." : noDish ? "No dish in view: no recipe to suggest." : "Recipes for the dish appear here.";
    box.append(el("div", { class: "empty small" }, why));
    return;
  }
  // Live events carry ids and titles; fetch the full recipes.
  const full = await Promise.all(recipes.map((r) => r.ingredients ? r : api("/api/recipes/" + encodeURIComponent(r.id)).catch(() => r)));
  box.replaceChildren(...full.map((r, i) => recipeCard(r, i === 0)));
}

// ---- live ----
function chips(s) {
  const m = s.models || {};
  const c = $("chips");
  const items = [
    el("span", { class: "chip" }, "pack ", el("b", {}, m.pack || "-")),
    el("span", { class: "chip" }, el("b", {}, m.backend || "-"), " " + (m.precision || "")),
    el("span", { class: "chip" }, "head ", el("b", {}, m.head || "-")),
    s.telemetry && s.telemetry.cpu_util != null ? el("span", { class: "chip" }, "cpu ", el("b", {}, Math.round(s.telemetry.cpu_util * 100) + " %")) : null,
    s.telemetry && s.telemetry.power_mw != null ? el("span", { class: "chip" }, el("b", {}, (s.telemetry.power_mw / 1000).toFixed(1) + " W")) : null,
  ];
  c.replaceChildren(...items.filter(Boolean));
}
function live(s) {
  const L = s.live;
  const status = $("live-status");
  status.textContent = L.status;
  status.className = "pill" + (L.status === "running" ? " running" : "");
  const hasFrame = !!L.frame;
  // "No dish in view" only while nothing is settled: a settled dish stays until released.
  const noDish = !L.dish && L.no_dish ? L.no_dish : null;
  // The settled dish's smoothed probability, the same number as its bar.
  const bar = L.dish && (L.top || []).find((t) => t.label === L.dish);
  const p = bar ? bar.probability : L.probability;
  $("live-empty").hidden = hasFrame;
  $("live-img").hidden = !hasFrame;
  $("live-overlay").hidden = !hasFrame || !(L.dish || noDish);
  $("live-dish").textContent = L.dish ? pretty(L.dish) : "No dish in view";
  $("live-prob").textContent = L.dish ? pct(p) + ", smoothed" : "";
  if (hasFrame) refreshFrame();
  const st = $("live-stats");
  st.replaceChildren();
  if (L.source) {
    const c = L.counts || {};
    const stats = [
      ["in", L.fps_in.toFixed(1) + " fps"], ["out", L.fps_out.toFixed(1) + " fps"],
      ["classified", c.classified ?? 0], ["gated", c.gated ?? 0], ["dropped", c.dropped ?? 0], ["no dish", c.no_dish ?? 0],
    ];
    for (const [k, v] of stats) {
      st.append(el("span", { "data-count": k }, k + " ", el("b", {}, v)));
    }
  }
  if (mode === "live") {
    showDish(L.dish, p, "live", noDish);
    showTop(L.top);
    const key = JSON.stringify([L.recipes || [], !!noDish]);
    if (key !== lastEventRecipes) { lastEventRecipes = key; showRecipes(L.recipes, L.dish, noDish); }
  }
}
function refreshFrame() {
  if (frameLoading) return;
  frameLoading = true;
  const img = $("live-img");
  const next = new Image();
  next.onload = () => { img.src = next.src; frameLoading = false; };
  next.onerror = () => { frameLoading = false; };
  next.src = withToken("/api/frame.jpg?t=" + Date.now());
}

// ---- latency chart (hand-drawn canvas) ----
function drawChart(s) {
  const liveRows = s.latency.live.ms;
  const useLive = liveRows.length > 0;
  const stages = useLive ? s.latency.live.stages : s.latency.upload.stages;
  const rows = useLive ? liveRows : s.latency.upload.ms;
  $("chart-what").textContent = useLive ? "live frames, per stage (ms)" : "uploaded photos, per stage (ms)";
  const canvas = $("chart");
  const dpr = window.devicePixelRatio || 1;
  const W = canvas.clientWidth || 560, H = canvas.clientHeight || 170;
  canvas.width = W * dpr; canvas.height = H * dpr;
  const g = canvas.getContext("2d");
  g.scale(dpr, dpr);
  g.clearRect(0, 0, W, H);
  const left = 38, right = 8, top = 8, bottom = 18;
  // Scale to the 95th percentile so one slow frame (the first, warming up) does not flatten
  // the rest; slower points are drawn at the top edge.
  const all = rows.flat().sort((a, b) => a - b);
  const p95 = all.length ? all[Math.floor((all.length - 1) * 0.95)] : 1;
  const nice = niceMax(Math.max(1, p95 * 1.15));
  g.font = "11px system-ui, sans-serif";
  g.fillStyle = "#6b6f76"; g.strokeStyle = "#ece8df"; g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = top + (H - top - bottom) * (1 - i / 4);
    g.beginPath(); g.moveTo(left, y); g.lineTo(W - right, y); g.stroke();
    g.fillText((nice * i / 4).toFixed(nice < 4 ? 1 : 0), 4, y + 4);
  }
  g.fillText(rows.length ? rows.length + (useLive ? " frames" : " photos") : "no data yet", left, H - 4);
  const n = Math.max(rows.length, 2);
  const x = (i) => left + (W - left - right) * (i / (n - 1));
  const y = (v) => top + (H - top - bottom) * (1 - Math.min(v, nice) / nice);
  const legend = $("legend");
  legend.replaceChildren();
  stages.forEach((stage, k) => {
    const colour = STAGE_COLOURS[k % STAGE_COLOURS.length];
    g.strokeStyle = colour; g.lineWidth = stage === "total" ? 2.2 : 1.4;
    g.beginPath();
    rows.forEach((r, i) => { i ? g.lineTo(x(i), y(r[k])) : g.moveTo(x(i), y(r[k])); });
    if (rows.length === 1) { g.arc(x(0), y(rows[0][k]), 2.5, 0, 7); }
    g.stroke();
    const vals = rows.map((r) => r[k]).sort((a, b) => a - b);
    const med = vals.length ? vals[Math.floor((vals.length - 1) / 2)] : null;
    legend.append(el("span", {}, el("i", { style: "background:" + colour }), stage + (med != null ? " " + med.toFixed(1) + " ms" : "")));
  });
}
function niceMax(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

async function poll() {
  try {
    const s = await api("/api/state");
    $("auth").hidden = true;
    chips(s);
    live(s);
    drawChart(s);
  } catch (e) { console.warn(e); }
}

// ---- upload ----
async function classify(file) {
  uploaded = file;
  mode = "upload";
  const card = $("result");
  card.dataset.state = "busy";
  $("result-title").textContent = "Your photo";
  $("back-live").hidden = false;
  $("result-error").hidden = true;
  const prev = $("photo-preview");
  prev.src = URL.createObjectURL(file);
  prev.hidden = false;
  showDish(null, null, "upload");
  $("dish-name").textContent = "Looking…";
  const form = new FormData();
  form.append("image", file, file.name || "photo.jpg");
  const text = $("photo-text").value.trim();
  if (text) form.append("text", text);
  try {
    const r = await api("/api/classify", { method: "POST", body: form });
    showDish(r.dish, r.probability, "upload", r.no_dish);
    showTop(r.top);
    await showRecipes(r.recipes, r.dish, r.no_dish);
    card.dataset.state = "done";
    poll();
  } catch (e) {
    $("dish-name").textContent = "-";
    $("result-error").textContent = e.message;
    $("result-error").hidden = false;
    card.dataset.state = "error";
  }
}
$("photo").addEventListener("change", (e) => { if (e.target.files[0]) classify(e.target.files[0]); });
const drop = document.querySelector(".drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files[0]) classify(e.dataTransfer.files[0]);
});
$("upload-form").addEventListener("submit", (e) => e.preventDefault());
$("back-live").addEventListener("click", () => {
  mode = "live"; uploaded = null; lastEventRecipes = null;
  $("result").dataset.state = "live";
  $("result-title").textContent = "What the camera sees";
  $("back-live").hidden = true;
  $("photo-preview").hidden = true;
  $("result-error").hidden = true;
  poll();
});

// ---- teach ----
$("teach-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const dish = $("teach-dish").value.trim();
  const form = new FormData();
  form.append("dish", dish);
  if (mode === "upload" && uploaded) form.append("image", uploaded, uploaded.name || "photo.jpg");
  else form.append("frame", "current");
  const btn = $("teach-btn"), note = $("teach-note");
  btn.disabled = true;
  note.textContent = "Teaching " + pretty(dish) + "… (refitting the head takes a few seconds)";
  try {
    const r = await api("/api/teach", { method: "POST", body: form });
    note.textContent = "Taught " + pretty(r.dish) + " from " + r.photos + " photo(s) in " + r.seconds.toFixed(1) + " s.";
    if (mode === "upload" && uploaded) classify(uploaded);
  } catch (err) {
    note.textContent = "Could not teach: " + err.message;
  } finally { btn.disabled = false; }
});

// ---- search ----
$("search-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const q = $("q").value.trim(), ex = $("exclude").value.trim();
  const hits = $("hits");
  hits.replaceChildren(el("li", {}, "Searching…"));
  try {
    const r = await api("/api/recipes?q=" + encodeURIComponent(q) + (ex ? "&exclude=" + encodeURIComponent(ex) : ""));
    hits.replaceChildren(...r.hits.map((h) => {
      const a = el("a", { href: "#" }, h.title);
      a.addEventListener("click", async (ev) => {
        ev.preventDefault();
        const full = await api("/api/recipes/" + encodeURIComponent(h.id));
        $("recipes-for").textContent = "from search";
        $("recipes").replaceChildren(recipeCard(full, true));
      });
      return el("li", {}, a, el("span", { class: "score" }, h.score.toFixed(2)));
    }));
    if (!r.hits.length) hits.replaceChildren(el("li", {}, "No recipe matches."));
  } catch (err) { hits.replaceChildren(el("li", {}, err.message)); }
});

// ---- token ----
$("auth-form").addEventListener("submit", (e) => {
  e.preventDefault();
  token = $("token").value.trim();
  localStorage.setItem("dishcam-token", token);
  $("auth").hidden = true;
  listen(); poll();
});

// ---- events ----
let source = null;
function listen() {
  if (source) source.close();
  source = new EventSource(withToken("/api/events"));
  source.addEventListener("dish", () => poll());
}

listen();
poll();
setInterval(poll, 1000);
setInterval(() => { if (!$("live-img").hidden) refreshFrame(); }, 300);
window.addEventListener("resize", poll);
