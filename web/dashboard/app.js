// keepalive dashboard: plain JavaScript, no build step. Talks to the REST API of the service
// that served it, with the API token the user types once (kept in sessionStorage only).
"use strict";

const TOKEN_KEY = "keepalive.token";
const REFRESH_MS = 3000;
const THUMB_MS = 6000;

const $ = (id) => document.getElementById(id);
const thumbs = new Map(); // session id -> {url, at}
let refreshTimer = null;

function token() {
  try { return sessionStorage.getItem(TOKEN_KEY); } catch (e) { return null; }
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// The API's error body as a sentence a person can read.
function describeError(status, body) {
  const detail = body && body.detail;
  if (Array.isArray(detail)) {
    return detail.map((item) => {
      const where = (item.loc || []).filter((part) => part !== "body").join(".");
      return where ? `${where}: ${item.msg}` : item.msg;
    }).join("\n");
  }
  if (typeof detail === "string") return detail;
  if (status === 401) return "The API token was refused. Enter it again.";
  return `The service answered ${status}.`;
}

async function api(method, path, body) {
  const headers = { "Authorization": `Bearer ${token()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, "The keepalive service cannot be reached.");
  }
  if (response.status === 401) {
    forgetToken();
  }
  if (!response.ok) {
    let parsed = null;
    try { parsed = await response.json(); } catch (e) { /* not JSON */ }
    throw new ApiError(response.status, describeError(response.status, parsed));
  }
  return response;
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

function forgetToken() {
  try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* ignore */ }
  render();
}

function render() {
  const haveToken = Boolean(token());
  $("token-panel").hidden = haveToken;
  $("start-panel").hidden = !haveToken;
  $("sessions-panel").hidden = !haveToken;
  $("forget-token").hidden = !haveToken;
  clearTimeout(refreshTimer);
  if (haveToken) refresh();
}

function age(createdAt) {
  const seconds = Math.max(0, (Date.now() - Date.parse(createdAt)) / 1000);
  if (seconds < 60) return `${Math.floor(seconds)} s old`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min old`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h old`;
  return `${Math.floor(seconds / 86400)} d old`;
}

async function loadThumb(session, img, note) {
  const known = thumbs.get(session.id);
  if (known) { img.src = known.url; img.hidden = false; note.textContent = ""; }
  if (session.state !== "ready") {
    if (!known) note.textContent = session.state === "failed" ? "no picture" : "starting…";
    return;
  }
  if (known && Date.now() - known.at < THUMB_MS) return;
  try {
    const response = await api("GET", `/sessions/${encodeURIComponent(session.id)}/screenshot`);
    const url = URL.createObjectURL(await response.blob());
    if (known) URL.revokeObjectURL(known.url);
    thumbs.set(session.id, { url, at: Date.now() });
    img.src = url;
    img.alt = `What session ${session.name} shows`;
    img.hidden = false;
    note.textContent = "";
  } catch (e) {
    if (!known) note.textContent = "no picture yet";
  }
}

function sessionCard(session) {
  const node = $("session-template").content.firstElementChild.cloneNode(true);
  node.dataset.id = session.id;
  node.dataset.name = session.name;
  node.dataset.state = session.state;
  node.querySelector(".name").textContent = session.name;
  const state = node.querySelector(".state");
  state.textContent = session.state;
  state.classList.add(session.state);
  const health = node.querySelector(".health");
  for (const [part, ok] of Object.entries(session.health || {})) {
    const dot = document.createElement("span");
    dot.className = `dot ${ok ? "ok" : "bad"}`;
    dot.title = `${part}: ${ok ? "ok" : "down"}`;
    health.append(dot);
  }
  health.title = Object.entries(session.health || {}).map(([k, v]) => `${k}: ${v ? "ok" : "down"}`).join(", ");
  node.querySelector(".age").textContent = age(session.created_at);
  node.querySelector(".restarts").textContent = `${session.restarts} restart${session.restarts === 1 ? "" : "s"}`;
  if (session.error) {
    const error = node.querySelector(".session-error");
    error.textContent = session.error;
    error.hidden = false;
  }
  const open = node.querySelector(".open");
  open.disabled = !["ready", "recovering"].includes(session.state);
  open.addEventListener("click", () => openViewer(session));
  node.querySelector(".stop").addEventListener("click", (event) => stopSession(session, event.target));
  loadThumb(session, node.querySelector("img"), node.querySelector(".thumb-note"));
  return node;
}

async function refresh() {
  clearTimeout(refreshTimer);
  try {
    const { sessions } = await (await api("GET", "/sessions")).json();
    const list = $("sessions");
    list.replaceChildren(...sessions.map(sessionCard));
    $("no-sessions").hidden = sessions.length > 0;
    for (const id of thumbs.keys()) {
      if (!sessions.some((s) => s.id === id)) { URL.revokeObjectURL(thumbs.get(id).url); thumbs.delete(id); }
    }
  } catch (e) {
    showError(e.message);
  }
  if (token()) refreshTimer = setTimeout(refresh, REFRESH_MS);
}

async function openViewer(session) {
  // open the window now, while the click still counts as a user action (popup blockers)
  const win = window.open("about:blank", "_blank");
  try {
    const response = await api("POST", `/sessions/${encodeURIComponent(session.id)}/viewer-link`, {});
    const link = new URL((await response.json()).url, window.location.href);
    // Spend the link's ticket here (this click is the user's action): the service answers with
    // the viewer cookie, and the new window opens the clean viewer URL without the extra page.
    const ticket = link.searchParams.get("ticket");
    link.searchParams.delete("ticket");
    const spent = await fetch(link.pathname, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ ticket }).toString(),
    });
    if (!spent.ok) throw new Error(`the viewer link was refused (${spent.status})`);
    const url = link.toString();
    if (win) {
      win.opener = null;
      win.location.replace(url);
    } else {
      window.location.assign(url);
    }
  } catch (e) {
    if (win) win.close();
    showError(`Cannot open the viewer of ${session.name}: ${e.message}`);
  }
}

async function stopSession(session, button) {
  if (!window.confirm(`Stop session "${session.name}"? Its running computations end; its notebooks stay in its home for the next session named ${session.name}.`)) return;
  button.disabled = true;
  button.textContent = "Stopping…";
  try {
    await api("DELETE", `/sessions/${encodeURIComponent(session.id)}`);
    showError("");
  } catch (e) {
    showError(`Cannot stop ${session.name}: ${e.message}`);
  }
  refresh();
}

function startBody() {
  const body = {};
  const name = $("start-name").value.trim();
  if (name) body.name = name;
  const host = $("heavyai-host").value.trim();
  if (host) {
    body.heavyai = { protocol: $("heavyai-protocol").value, host };
    const port = $("heavyai-port").value.trim();
    if (port) body.heavyai.port = Number(port);
    const sessionId = $("heavyai-session").value;
    if (sessionId) body.heavyai.session_id = sessionId;
    const query = $("heavyai-query").value;
    if (query.trim()) body.heavyai.query = query;
  }
  return body;
}

function progress(text) {
  $("start-progress").hidden = !text;
  $("start-progress-text").textContent = text || "";
  $("start-button").disabled = Boolean(text);
}

async function startSession(event) {
  event.preventDefault();
  showError("");
  progress("Starting…");
  try {
    // answer at once (202) and watch the session come up, so the page can show progress
    let session = await (await api("POST", "/sessions?wait=false", startBody())).json();
    $("start-form").reset();
    refresh();
    const began = Date.now();
    while (session.state === "starting") {
      progress(`Starting ${session.name}… ${Math.round((Date.now() - began) / 1000)} s`);
      await new Promise((resolve) => setTimeout(resolve, 1000));
      session = await (await api("GET", `/sessions/${encodeURIComponent(session.id)}`)).json();
    }
    if (session.state !== "ready") {
      showError(`Session ${session.name} did not start: ${session.error || session.state}`);
    }
  } catch (e) {
    showError(e.message);
  } finally {
    progress("");
    refresh();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token-input").value.trim();
    if (!value) return;
    try { sessionStorage.setItem(TOKEN_KEY, value); } catch (e) { showError("This browser does not keep the token."); }
    $("token-input").value = "";
    showError("");
    render();
  });
  $("forget-token").addEventListener("click", forgetToken);
  $("start-form").addEventListener("submit", startSession);
  render();
});
