// keepalive dashboard: plain JavaScript, no build step. Talks to the REST API of the service
// that served it, with the API token the user types once (kept in sessionStorage only), or
// with none when a proxy in front adds it (jupyter-server-proxy, behind the hub's login).
// Every address is relative to the page, so that it works under a proxy's path prefix too.
"use strict";

const TOKEN_KEY = "keepalive.token";
// The list is re-read when the service's event stream (GET /events) says something changed;
// pictures have no events, so they are re-taken now and then.
const THUMB_MS = 6000;
const PICTURES_MS = 15000;
const EVENT_SETTLE_MS = 250; // a burst of events is one re-read
const RECONNECT_MS = [1000, 2000, 5000, 10000];

const $ = (id) => document.getElementById(id);
const thumbs = new Map(); // session id -> {url, at}
const TIMELINE_EVENTS = 20;
const openTimelines = new Set(); // session names whose timeline is unfolded: kept across re-reads
const timelineShots = new Map(); // a thumbnail's URL -> its blob: URL (they never change)
let refreshTimer = null;
let pictureTimer = null;
let following = null; // the AbortController of the event stream, while it is open
let shown = []; // the sessions on the page
let proxyAuthorizes = false; // the service answered without a token: a proxy in front adds it

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

async function api(method, path, body, signal, accept) {
  const headers = token() ? { "Authorization": `Bearer ${token()}` } : {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (accept) headers["Accept"] = accept;
  let response;
  try {
    response = await fetch(path, { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    if (signal && signal.aborted) throw e;
    throw new ApiError(0, "The keepalive service cannot be reached.");
  }
  if (response.status === 401) {
    proxyAuthorizes = false;
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

function signedIn() {
  return proxyAuthorizes || Boolean(token());
}

function render() {
  const haveToken = signedIn();
  $("token-panel").hidden = haveToken;
  $("start-panel").hidden = !haveToken;
  $("sessions-panel").hidden = !haveToken;
  $("forget-token").hidden = proxyAuthorizes || !token();
  clearTimeout(refreshTimer);
  clearInterval(pictureTimer);
  if (following) { following.abort(); following = null; }
  if (haveToken) {
    refresh();
    follow();
    pictureTimer = setInterval(refreshPictures, PICTURES_MS);
  }
}

function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, EVENT_SETTLE_MS);
}

// Read GET /events (server-sent events; fetch, since EventSource cannot send the token) and
// re-read the list whenever a session changes. Reconnects with a growing pause if it drops.
async function follow(attempt = 0) {
  const controller = new AbortController();
  following = controller;
  let heard = false;
  try {
    // the Accept header also tells a proxy in front to pass the stream on as it comes
    const response = await api("GET", "events", undefined, controller.signal, "text/event-stream");
    $("service-status").textContent = "live";
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (block.split("\n").some((line) => line.startsWith("event: "))) {
          heard = true;
          refreshSoon();
        }
      }
    }
  } catch (e) {
    if (controller.signal.aborted) return;
    if (e instanceof ApiError && e.status === 401) return; // forgetToken() took over
  }
  if (following !== controller) return;
  $("service-status").textContent = "reconnecting…";
  const pause = RECONNECT_MS[Math.min(heard ? 0 : attempt, RECONNECT_MS.length - 1)];
  setTimeout(() => { if (following === controller && signedIn()) { refresh(); follow(heard ? 0 : attempt + 1); } }, pause);
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
    // a screenshot would wake a session in standby: its last picture stays until it is opened
    const why = { failed: "no picture", standby: "in standby: opening it wakes it" }[session.state];
    if (!known) note.textContent = why || "starting…";
    return;
  }
  if (known && Date.now() - known.at < THUMB_MS) return;
  try {
    const response = await api("GET", `sessions/${encodeURIComponent(session.id)}/screenshot`);
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
  // "xpra" is the older name of "display", kept for API clients: one dot for the one fact.
  // In standby the display's parts are down on purpose: shown asleep, not failed.
  const asleep = Boolean(session.health && session.health.standby);
  const parts = Object.entries(session.health || {}).filter(([part]) => part !== "xpra" && part !== "standby");
  const word = (part, ok) => (ok ? "ok" : asleep && part !== "jupyter" ? "asleep" : "down");
  for (const [part, ok] of parts) {
    const dot = document.createElement("span");
    dot.className = `dot ${ok ? "ok" : word(part, ok) === "asleep" ? "asleep" : "bad"}`;
    dot.title = `${part}: ${word(part, ok)}`;
    health.append(dot);
  }
  health.title = parts.map(([k, v]) => `${k}: ${word(k, v)}`).join(", ");
  node.querySelector(".age").textContent = age(session.created_at);
  node.querySelector(".restarts").textContent = `${session.restarts} restart${session.restarts === 1 ? "" : "s"}`;
  showActivity(node.querySelector(".activity"), session.activity);
  if (session.error) {
    const error = node.querySelector(".session-error");
    error.textContent = session.error;
    error.hidden = false;
  }
  const open = node.querySelector(".open");
  open.disabled = !["ready", "recovering", "standby"].includes(session.state);
  open.addEventListener("click", () => openViewer(session));
  const share = node.querySelector(".share");
  share.disabled = open.disabled;
  share.addEventListener("click", () => shareWatchOnly(session, node.querySelector(".share-links")));
  node.querySelector(".stop").addEventListener("click", (event) => stopSession(session, event.target));
  loadThumb(session, node.querySelector("img"), node.querySelector(".thumb-note"));
  const timeline = node.querySelector(".timeline");
  timeline.open = openTimelines.has(session.name);
  if (timeline.open) loadTimeline(session, timeline);
  timeline.addEventListener("toggle", () => {
    if (timeline.open) { openTimelines.add(session.name); loadTimeline(session, timeline); }
    else openTimelines.delete(session.name);
  });
  return node;
}

// One timeline event as the dashboard shows it (the CLI's `keepalive timeline` says the same).
function describeEvent(event) {
  if (event.kind === "run") {
    let text = `${event.notebook || "a kernel"}: ${event.outcome}`;
    if (event.error) text += ` (${event.error.ename}: ${event.error.evalue})`;
    return `${text}, ${event.cells} cell(s) in ${Math.round(event.busy_seconds)} s`;
  }
  if (event.kind === "busy") return (event.running || []).map((k) => `${k.notebook || "a kernel"} busy`).join(", ");
  return event.message || event.error || (event.from ? `from: ${event.from}` : "");
}

// The home's timeline, newest first, with its thumbnails (fetched with the token, shown as blobs).
async function loadTimeline(session, box) {
  const list = box.querySelector(".events");
  const note = box.querySelector(".timeline-note");
  let events;
  try {
    const path = `sessions/${encodeURIComponent(session.id)}/timeline?limit=${TIMELINE_EVENTS}`;
    events = (await (await api("GET", path)).json()).events;
  } catch (e) {
    note.textContent = e.message;
    return;
  }
  note.textContent = events.length ? "" : "Nothing yet.";
  list.replaceChildren(...events.map((event) => {
    const item = document.createElement("li");
    item.className = `event ${event.kind}${event.outcome === "error" ? " failed" : ""}`;
    const line = document.createElement("div");
    const when = document.createElement("time");
    when.dateTime = event.at;
    when.textContent = new Date(event.at).toLocaleString();
    const kind = document.createElement("strong");
    kind.textContent = event.kind;
    line.append(when, " ", kind, " ", describeEvent(event));
    item.append(line);
    const tail = event.tail || [];
    if (tail.length) {
      const pre = document.createElement("pre");
      pre.className = "tail";
      pre.textContent = tail.join("\n");
      item.append(pre);
    }
    if (event.shot_url) {
      const img = document.createElement("img");
      img.alt = `The kiosk at ${when.textContent}`;
      img.className = "event-shot";
      item.append(img);
      showTimelineShot(event.shot_url, img);
    }
    return item;
  }));
}

async function showTimelineShot(url, img) {
  if (!timelineShots.has(url)) {
    // relative to the page: the service may sit under a proxy's path prefix
    const path = new URL(url).pathname.replace(/^.*?\/(sessions|homes)\//, "$1/");
    try {
      timelineShots.set(url, URL.createObjectURL(await (await api("GET", path)).blob()));
    } catch (e) {
      img.remove();
      return;
    }
  }
  img.src = timelineShots.get(url);
}

function clock(iso) {
  return iso ? new Date(iso).toLocaleTimeString() : "";
}

// The session's kernels: which notebook, busy or idle since when, the last output, and the
// last lines of a running cell.
function showActivity(box, activity) {
  box.replaceChildren();
  if (!activity) return;
  for (const kernel of activity.kernels) {
    const line = document.createElement("div");
    line.className = `kernel ${kernel.state}`;
    const parts = [kernel.notebook || "a kernel", `${kernel.state} since ${clock(kernel.since)}`];
    if (kernel.last_output_at) parts.push(`last output ${clock(kernel.last_output_at)}`);
    if (kernel.state !== "busy" && kernel.last_run) {
      parts.push(kernel.last_run.outcome === "error"
        ? `last run failed: ${kernel.last_run.error ? kernel.last_run.error.ename : "error"}`
        : `last run ${Math.round(kernel.last_run.busy_seconds)} s`);
    }
    line.textContent = parts.join(" · ");
    box.append(line);
    if (kernel.running && kernel.running.tail.length) {
      const tail = document.createElement("pre");
      tail.className = "tail";
      tail.textContent = kernel.running.tail.join("\n");
      box.append(tail);
    }
  }
}

function refreshPictures() {
  for (const node of $("sessions").children) {
    const session = shown.find((s) => s.id === node.dataset.id);
    if (session) loadThumb(session, node.querySelector("img"), node.querySelector(".thumb-note"));
  }
}

async function refresh() {
  clearTimeout(refreshTimer);
  try {
    const { sessions } = await (await api("GET", "sessions")).json();
    const list = $("sessions");
    shown = sessions;
    list.replaceChildren(...sessions.map(sessionCard));
    $("no-sessions").hidden = sessions.length > 0;
    for (const id of thumbs.keys()) {
      if (!sessions.some((s) => s.id === id)) { URL.revokeObjectURL(thumbs.get(id).url); thumbs.delete(id); }
    }
  } catch (e) {
    showError(e.message);
  }
}

async function openViewer(session) {
  // open the window now, while the click still counts as a user action (popup blockers)
  const win = window.open("about:blank", "_blank");
  try {
    const response = await api("POST", `sessions/${encodeURIComponent(session.id)}/viewer-link`, {});
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

// Watch-only links to hand on: the viewer (nothing its browser sends reaches the session) and
// the status page for a phone. Each works once; shown as text, for the user to copy.
async function shareWatchOnly(session, where) {
  try {
    const response = await api("POST", `sessions/${encodeURIComponent(session.id)}/viewer-link`, { read_only: true });
    const link = await response.json();
    const until = new Date(link.expires_at).toLocaleTimeString();
    where.replaceChildren(`Watch-only, each works once until ${until}. Viewer: `, anchor(link.url),
                          " Status page: ", anchor(link.status_url));
    where.hidden = false;
  } catch (e) {
    showError(`Cannot make a watch-only link for ${session.name}: ${e.message}`);
  }
}

function anchor(url) {
  const a = document.createElement("a");
  a.href = a.textContent = new URL(url, window.location.href).toString();
  a.target = "_blank";
  a.rel = "noopener noreferrer";
  return a;
}

async function stopSession(session, button) {
  if (!window.confirm(`Stop session "${session.name}"? Its running computations end; its notebooks stay in its home for the next session named ${session.name}.`)) return;
  button.disabled = true;
  button.textContent = "Stopping…";
  try {
    await api("DELETE", `sessions/${encodeURIComponent(session.id)}`);
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
    let session = await (await api("POST", "sessions?wait=false", startBody())).json();
    $("start-form").reset();
    refresh();
    const began = Date.now();
    while (session.state === "starting") {
      progress(`Starting ${session.name}… ${Math.round((Date.now() - began) / 1000)} s`);
      await new Promise((resolve) => setTimeout(resolve, 1000));
      session = await (await api("GET", `sessions/${encodeURIComponent(session.id)}`)).json();
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
  detectProxy().then(render);
});

// Behind jupyter-server-proxy the service answers without a token from the page: say so once,
// and never ask for one.
async function detectProxy() {
  if (token()) return;
  try {
    proxyAuthorizes = (await fetch("sessions", { credentials: "same-origin" })).ok;
  } catch (e) { /* the service is down: the token panel shows, and the error with the next try */ }
}
