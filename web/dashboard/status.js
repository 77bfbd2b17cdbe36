// The status page (keepalive/api/status_page.py): reads status/state every few seconds while it
// is shown, and answers a cell's input() with status/input. Everything it shows is text set with
// textContent: nothing the session prints can become markup.
"use strict";

const STATE_MS = 2000;
const PICTURE_MS = 15000;
const $ = (id) => document.getElementById(id);
let pictureShownAt = 0;
let asked = "";  // the waiting kernels and prompts the answer boxes were made for

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString([], { dateStyle: "short", timeStyle: "medium" }) : "";
}

function showKernels(kernels) {
  const list = $("kernels");
  list.replaceChildren();
  $("no-kernels").hidden = kernels.length > 0;
  for (const kernel of kernels) {
    const item = element("li");
    item.append(element("div", "notebook", kernel.notebook || `kernel ${kernel.id}`));
    const line = element("div", "muted");
    line.append(element("span", `badge ${kernel.state}`, kernel.state), ` since ${when(kernel.since)}`);
    item.append(line);
    const tail = kernel.running ? kernel.running.tail : null;
    if (kernel.last_run && !kernel.running) {
      const outcome = kernel.last_run.outcome + (kernel.last_run.error ? `: ${kernel.last_run.error}` : "");
      item.append(element("div", kernel.last_run.outcome === "error" ? "error" : "muted", `last run ${outcome}`));
    }
    if (tail && tail.length) item.append(element("pre", "tail", tail.join("\n")));
    list.append(item);
  }
}

function showQuestions(kernels, watchOnly) {
  const waiting = kernels.filter((k) => k.running && k.running.input);
  const key = JSON.stringify(waiting.map((k) => [k.id, k.running.input]));
  $("asking").hidden = waiting.length === 0;
  if (key === asked) return;  // keep what the user is typing
  asked = key;
  const box = $("questions");
  box.replaceChildren();
  for (const kernel of waiting) {
    const question = element("div", "question");
    question.append(element("div", "notebook", kernel.notebook || `kernel ${kernel.id}`));
    question.append(element("div", "prompt", kernel.running.input.prompt || "(no prompt)"));
    if (watchOnly) {
      question.append(element("p", "muted", "This link may only watch: answer it from a full link."));
    } else {
      const form = element("form");
      const field = element("input");
      field.type = kernel.running.input.password ? "password" : "text";
      field.autocomplete = "off";
      field.name = "answer";
      field.setAttribute("aria-label", "your answer");
      const send = element("button", "", "Send");
      send.type = "submit";
      const result = element("div", "muted");
      form.append(field, send);
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        answer(kernel.id, field, send, result);
      });
      question.append(form, result);
    }
    box.append(question);
  }
}

async function answer(kernelId, field, send, result) {
  send.disabled = true;
  try {
    const response = await fetch("status/input", {
      method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ value: field.value, kernel_id: kernelId }),
    });
    const body = await response.json().catch(() => ({}));
    field.value = "";  // never kept on the page, a password least of all
    result.className = response.ok ? "answered" : "failed";
    result.textContent = response.ok ? "Sent." : `Not sent: ${body.detail || response.status}`;
  } catch (error) {
    result.className = "failed";
    result.textContent = `Not sent: ${error}`;
  } finally {
    send.disabled = false;
  }
}

function describe(event) {
  const parts = [event.notebook, event.outcome, event.error, event.prompt, event.message, event.from].filter(Boolean);
  return parts.join(" · ");
}

function showTimeline(events) {
  const list = $("timeline");
  list.replaceChildren();
  for (const event of events) {
    const item = element("li");
    const head = element("div");
    head.append(element("span", "kind", event.kind.replace("_", " ")), " ", element("span", "muted", when(event.at)));
    item.append(head);
    const text = describe(event);
    if (text) item.append(element("div", event.outcome === "error" ? "error" : "", text));
    if (event.tail && event.tail.length) item.append(element("pre", "tail", event.tail.join("\n")));
    if (event.shot_url) {
      const shot = element("img", "shot");
      shot.loading = "lazy";
      shot.alt = `the screen at ${when(event.at)}`;
      shot.src = event.shot_url;
      item.append(shot);
    }
    list.append(item);
  }
}

function showPicture(available) {
  $("picture-section").hidden = !available;
  if (available && Date.now() - pictureShownAt > PICTURE_MS) {
    pictureShownAt = Date.now();
    $("picture").src = `status/picture.jpg?at=${pictureShownAt}`;
  }
}

async function refresh() {
  try {
    const response = await fetch("status/state", { credentials: "same-origin", cache: "no-store" });
    if (!response.ok) {
      $("updated").textContent = response.status === 401 || response.status === 403
        ? "This page's pass is no longer valid: open a new status link."
        : `The service answered ${response.status}; trying again.`;
      return;
    }
    const state = await response.json();
    $("name").textContent = state.session.name;
    $("state").textContent = state.session.state;
    $("rights").hidden = !state.watch_only;
    document.title = `${state.session.name}: keepalive`;
    showQuestions(state.kernels, state.watch_only);
    showKernels(state.kernels);
    showPicture(state.picture);
    showTimeline(state.timeline);
    $("updated").textContent = `Updated ${when(state.at)}`;
  } catch (error) {
    $("updated").textContent = `Could not reach the service (${error}); trying again.`;
  }
}

let timer = null;
function follow() {
  clearInterval(timer);
  if (document.visibilityState === "visible") {
    refresh();
    timer = setInterval(refresh, STATE_MS);
  }
}
document.addEventListener("visibilitychange", follow);
follow();
