// dse web page: search (text, image, fused), result grid, page viewer with similarity maps, answer mode.
// Plain JavaScript, no build step. Every API call sends the API key (if one is saved) in the
// X-API-Key header; images are fetched the same way and shown through blob: URLs, so the key
// never appears in a URL.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "dse.apiKey";
const state = { info: null, image: null, lastText: "", viewer: null, blobs: [] };

function apiKey() { return localStorage.getItem(KEY_STORE) || ""; }

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = apiKey();
  if (key) headers.set("X-API-Key", key);
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.detail) detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch (_) { /* not JSON */ }
    const error = new Error(detail);
    error.status = response.status;
    throw error;
  }
  return response;
}

async function imageUrl(path) {
  const blob = await (await api(path)).blob();
  const url = URL.createObjectURL(blob);
  state.blobs.push(url);
  return url;
}

function releaseBlobs() {
  state.blobs.forEach((u) => URL.revokeObjectURL(u));
  state.blobs = [];
}

function parseFilters(text) {
  const filters = {};
  for (const part of text.split(",")) {
    if (!part.trim()) continue;
    const at = part.indexOf("=");
    if (at <= 0) throw new Error(`filter "${part.trim()}" is not key=value`);
    filters[part.slice(0, at).trim()] = part.slice(at + 1).trim();
  }
  return filters;
}

function setStatus(el, text, isError = false) {
  el.textContent = text;
  el.classList.toggle("error", isError);
}

function basename(source) {
  const clean = source.split(/[?#]/)[0].replace(/\/+$/, "");
  return clean.slice(clean.lastIndexOf("/") + 1) || source;
}

// ------------------------------------------------------------------ info / key
async function loadInfo() {
  try {
    state.info = await (await api("/info")).json();
    const c = state.info.collection;
    $("info").textContent = `${c.pages} pages · ${c.documents} documents · ${c.family} (${c.kind}-vector)`;
    $("info").classList.remove("error");
    $("tab-answer").title = state.info.features.answer ? "" : "the server runs without --generator";
  } catch (e) {
    state.info = null;
    $("info").textContent = e.status === 401 ? "API key required: enter it on the right" : `cannot reach the server: ${e.message}`;
    $("info").classList.add("error");
  }
}

function initKey() {
  const params = new URLSearchParams(location.search);
  if (params.has("key")) {  // ?key=... : store it, then drop it from the address bar
    localStorage.setItem(KEY_STORE, params.get("key"));
    params.delete("key");
    history.replaceState(null, "", location.pathname + (params.toString() ? `?${params}` : ""));
  }
  $("api-key").value = apiKey();
  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("api-key").value.trim();
    if (key) localStorage.setItem(KEY_STORE, key); else localStorage.removeItem(KEY_STORE);
    loadInfo();
  });
}

// --------------------------------------------------------------------- tabs
function setMode(mode) {
  for (const tab of document.querySelectorAll(".tab")) {
    const active = tab.dataset.mode === mode;
    tab.classList.toggle("active", active);
    tab.setAttribute("aria-selected", String(active));
  }
  $("search-panel").hidden = mode !== "search";
  $("answer-panel").hidden = mode !== "answer";
  if (mode === "answer" && state.info && !state.info.features.answer) {
    setStatus($("answer-status"), "Answer mode is off: start the server with --generator MODEL.", true);
  }
}

// -------------------------------------------------------------- query image
function setImage(file) {
  if (file && !file.type.startsWith("image/")) {
    setStatus($("status"), `${file.name} is not an image`, true);
    return;
  }
  state.image = file || null;
  $("image-chip").hidden = !file;
  $("drop-hint").hidden = !!file;
  if (file) {
    $("image-name").textContent = file.name;
    $("image-preview").src = URL.createObjectURL(file);
  } else {
    $("image-input").value = "";
  }
}

function initDrop() {
  const drop = $("drop");
  $("pick-image").addEventListener("click", (ev) => { ev.preventDefault(); $("image-input").click(); });
  $("image-input").addEventListener("change", () => setImage($("image-input").files[0]));
  $("clear-image").addEventListener("click", () => setImage(null));
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    if (ev.dataTransfer.files.length) setImage(ev.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (ev) => {
    const item = [...(ev.clipboardData || {}).items || []].find((i) => i.type.startsWith("image/"));
    if (item) setImage(item.getAsFile());
  });
}

// ------------------------------------------------------------------- search
function hitCard(hit, text, label = `#${hit.rank}`) {
  const card = document.createElement("figure");
  card.className = "hit";
  card.dataset.pageId = hit.page_id;
  card.tabIndex = 0;
  const img = document.createElement("img");
  img.className = "thumb";
  img.alt = `${basename(hit.source)}, page ${hit.page}`;
  imageUrl(hit.thumbnail_url).then((u) => { img.src = u; }).catch(() => {
    img.alt = "image unavailable";
    img.classList.add("failed");
  });
  const caption = document.createElement("figcaption");
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = hit.score.toFixed(4);
  const where = document.createElement("span");
  where.className = "source";
  where.title = hit.source;
  where.textContent = `${basename(hit.source)} · p.${hit.page}`;
  caption.append(`${label} `, score, document.createElement("br"), where);
  if (hit.title) {
    const t = document.createElement("div");
    t.className = "title";
    t.textContent = hit.title;
    caption.append(t);
  }
  card.append(img, caption);
  const open = () => openViewer(hit, text);
  card.addEventListener("click", open);
  card.addEventListener("keydown", (ev) => { if (ev.key === "Enter") open(); });
  return card;
}

async function runSearch(ev) {
  ev.preventDefault();
  const text = $("query").value.trim();
  if (!text && !state.image) {
    setStatus($("status"), "Type a query or add an image.", true);
    return;
  }
  let filters;
  try { filters = parseFilters($("filters").value); } catch (e) { setStatus($("status"), e.message, true); return; }
  const k = Number($("k").value);
  const fusion = $("rrf").checked ? "rrf" : null;
  let request;
  if (state.image) {
    const form = new FormData();
    form.append("image", state.image, state.image.name || "query.png");
    if (text) form.append("text", text);
    form.append("k", String(k));
    if (Object.keys(filters).length) form.append("filters", JSON.stringify(filters));
    if (fusion) form.append("fusion", fusion);
    request = { method: "POST", body: form };
  } else {
    // a JSON query is text-only: RRF needs an image, and the server refuses fields it would ignore
    const body = { text, k };
    if (Object.keys(filters).length) body.filters = filters;
    request = { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  }
  setStatus($("status"), "Searching…");
  $("search-button").disabled = true;
  try {
    const data = await (await api("/search", request)).json();
    releaseBlobs();
    state.lastText = text;
    const grid = $("results");
    grid.replaceChildren(...data.hits.map((h) => hitCard(h, text)));
    const kind = state.image ? (text ? (fusion ? "text + image (RRF)" : "fused text + image") : "image") : "text";
    setStatus($("status"), data.hits.length
      ? `${data.hits.length} results (${kind} query, ${Math.round(data.took_ms)} ms)`
      : "No results.");
  } catch (e) {
    setStatus($("status"), e.message, true);
  } finally {
    $("search-button").disabled = false;
  }
}

// ------------------------------------------------------------------- viewer
async function openViewer(hit, text) {
  state.viewer = { hit, text };
  $("viewer").hidden = false;
  $("viewer-title").textContent = `${basename(hit.source)} · page ${hit.page}` + (hit.title ? ` · ${hit.title}` : "");
  const simOk = !!(state.info && state.info.features.similarity && text);
  $("sim-controls").hidden = !simOk;
  $("sim-toggle").checked = false;
  $("sim-token").replaceChildren(new Option("all query tokens", ""));
  setStatus($("viewer-status"), simOk ? "" : (state.info && !state.info.features.similarity
    ? "Similarity maps need a multi-vector (ColPali-family) collection." : ""));
  await showPage();
  $("viewer-close").focus();
}

async function showPage() {
  const { hit } = state.viewer;
  try {
    const url = await imageUrl(hit.image_url);
    $("viewer-img").src = url;
    $("viewer-img").dataset.kind = "page";
    $("viewer-open").href = url;
  } catch (e) {
    setStatus($("viewer-status"), e.message, true);
  }
}

async function showSimilarity() {
  const { hit, text } = state.viewer;
  const token = $("sim-token").value;
  const q = new URLSearchParams({ text });
  if (token !== "") q.set("token", token);
  setStatus($("viewer-status"), "Computing the similarity map…");
  try {
    if ($("sim-token").options.length <= 1) {  // fill the token list once per page
      const data = await (await api(`/pages/${hit.page_id}/similarity?${new URLSearchParams({ text, format: "json" })}`)).json();
      data.tokens.forEach((t, i) => {
        if (!data.special[i]) $("sim-token").append(new Option(`${i}: ${t}`, String(i)));
      });
    }
    const url = await imageUrl(`/pages/${hit.page_id}/similarity?${q}`);
    $("viewer-img").src = url;
    $("viewer-img").dataset.kind = "similarity";
    setStatus($("viewer-status"), "Brighter patches match the query more.");
  } catch (e) {
    setStatus($("viewer-status"), e.message, true);
    $("sim-toggle").checked = false;
  }
}

function closeViewer() {
  $("viewer").hidden = true;
  $("viewer-img").removeAttribute("src");
  state.viewer = null;
}

function initViewer() {
  $("viewer-close").addEventListener("click", closeViewer);
  $("viewer").addEventListener("click", (ev) => { if (ev.target === $("viewer")) closeViewer(); });
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape" && !$("viewer").hidden) closeViewer(); });
  $("sim-toggle").addEventListener("change", () => ($("sim-toggle").checked ? showSimilarity() : showPage()));
  $("sim-token").addEventListener("change", () => { if ($("sim-toggle").checked) showSimilarity(); });
}

// ------------------------------------------------------------------- answer
async function runAnswer(ev) {
  ev.preventDefault();
  const question = $("question").value.trim();
  if (!question) { setStatus($("answer-status"), "Type a question.", true); return; }
  let filters;
  try { filters = parseFilters($("answer-filters").value); } catch (e) { setStatus($("answer-status"), e.message, true); return; }
  setStatus($("answer-status"), "Retrieving pages and generating the answer…");
  $("answer-button").disabled = true;
  $("answer").hidden = true;
  try {
    const data = await (await api("/answer", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ question, k: Number($("answer-k").value), ...(Object.keys(filters).length ? { filters } : {}) }),
    })).json();
    $("answer-text").textContent = data.answer;
    $("answer-pages").replaceChildren(...data.cited_pages.map((h) => hitCard(h, question, `[${h.number}]`)));
    $("answer-cited").textContent = data.cited_pages_source === "citations"
      ? "Cited pages" : "Pages the answer was generated from (it cites none)";
    $("answer").hidden = false;
    setStatus($("answer-status"), `Answered from ${data.pages.length} pages in ${(data.took_ms / 1000).toFixed(1)} s.`);
  } catch (e) {
    setStatus($("answer-status"), e.message, true);
  } finally {
    $("answer-button").disabled = false;
  }
}

// --------------------------------------------------------------------- init
document.addEventListener("DOMContentLoaded", () => {
  initKey();
  initDrop();
  initViewer();
  for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => setMode(tab.dataset.mode));
  $("search-form").addEventListener("submit", runSearch);
  $("answer-form").addEventListener("submit", runAnswer);
  loadInfo();
});
