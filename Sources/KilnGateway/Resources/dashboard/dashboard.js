// Kiln's dashboard: a client of the gateway's public API (the same calls as `kiln` and curl), with the
// caller's token if the gateway requires one. Views: the builds list (#/), a build (#/build/ID) with
// its log streaming live, and the submit form (#/submit).
import { verifyResult } from "/ui/verify.js";

const main = document.getElementById("main");
const tokenInput = document.getElementById("token");
tokenInput.value = sessionStorage.getItem("kiln-token") || "";
document.getElementById("token-form").addEventListener("submit", (e) => e.preventDefault());
tokenInput.addEventListener("change", () => { sessionStorage.setItem("kiln-token", tokenInput.value.trim()); route(); });

let stopView = () => {};

function headers(extra = {}) {
  const token = sessionStorage.getItem("kiln-token");
  return token ? { ...extra, Authorization: "Bearer " + token } : extra;
}

export async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  if (!response.ok) {
    const text = (await response.text()).trim();
    throw new Error(`${response.status}: ${text || response.statusText}`);
  }
  return response;
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attributes)) {
    if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v); else node.setAttribute(k, v);
  }
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return node;
}

function statusChip(status) { return el("span", { class: "status " + status, "data-status": status }, status); }

function show(...nodes) {
  main.replaceChildren(...nodes);
}

function failure(error) { return el("p", { class: "error-box", role: "alert" }, String(error.message || error)); }

// MARK: server-sent events

/// Reads an SSE stream: with EventSource when no token is needed (it reconnects by itself and sends
/// Last-Event-ID), else with fetch (EventSource cannot send headers), reconnecting the same way.
/// `onEvent(id, data)` gets each event; returns a function that stops it.
function stream(path, types, onEvent) {
  let lastID = "";
  if (!sessionStorage.getItem("kiln-token")) {
    const source = new EventSource(path);
    const handler = (e) => onEvent(e.lastEventId, e.data);
    for (const type of types) source.addEventListener(type, handler);
    return () => source.close();
  }
  const controller = new AbortController();
  (async () => {
    while (!controller.signal.aborted) {
      try {
        const response = await api(path, { signal: controller.signal, headers: lastID ? { "Last-Event-ID": lastID } : {} });
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
            let id = "", data = [];
            for (const line of block.split("\n")) {
              if (line.startsWith("id:")) id = line.slice(3).trim();
              else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
            }
            if (id) lastID = id;
            if (data.length) onEvent(id, data.join("\n"));
          }
        }
      } catch (e) {
        if (controller.signal.aborted) return;
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  })();
  return () => controller.abort();
}

// MARK: builds list

async function listView() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const filter = el("select", { id: "status-filter", "aria-label": "Filter by status" },
    ["", "waiting", "building", "ready", "error", "cancelled"].map((s) => {
      const o = el("option", { value: s }, s || "all statuses");
      if (s === (params.get("status") || "")) o.selected = true;
      return o;
    }));
  filter.addEventListener("change", () => { location.hash = "#/" + (filter.value ? "?status=" + filter.value : ""); });
  const counters = el("ul", { class: "counters", "aria-label": "Farm" });
  const body = el("tbody");
  const table = el("table", { id: "builds" },
    el("caption", { class: "skip" }, "Newest first; updated live"),
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Build"), el("th", { scope: "col" }, "Status"),
      el("th", { scope: "col" }, "Phase"), el("th", { scope: "col", class: "optional" }, "Submitted"),
      el("th", { scope: "col", class: "optional" }, "By"))),
    body);
  show(el("h1", {}, "Builds"), counters, el("label", { for: "status-filter" }, "Status"), filter, table);
  const row = (b) => el("tr", { "data-job": b.job_id, "data-created": b.created_at || "" },
    el("td", {}, el("a", { href: "#/build/" + b.job_id, class: "mono" }, b.job_id)),
    el("td", {}, statusChip(b.status)), el("td", {}, b.phase || ""),
    el("td", { class: "optional" }, b.created_at || ""), el("td", { class: "optional" }, b.triggered_by || ""));
  let counting = null;
  const refreshCounters = () => {
    counting ??= (async () => {
      try {
        const farm = await (await api("/farm")).json();
        counters.replaceChildren(
          el("li", { id: "queue-depth" }, `${farm.waiting} queued`), el("li", {}, `${farm.building} building`),
          el("li", { id: "workers-idle" }, `${farm.workers_idle} idle workers`), el("li", {}, `${farm.workers_busy} busy workers`));
      } catch (e) { counters.replaceChildren(el("li", {}, failure(e))); }
      counting = null;
    })();
  };
  // A job's new state: replaced in place, inserted in order, or removed when it leaves the filter.
  const upsert = (b) => {
    const old = body.querySelector(`tr[data-job="${b.job_id}"]`);
    const wanted = !filter.value || b.status === filter.value;
    if (!wanted) { old?.remove(); return; }
    const fresh = row(b);
    if (old) { old.replaceWith(fresh); return; }
    body.querySelector("tr.empty")?.remove();
    const after = Array.from(body.querySelectorAll("tr[data-job]")).find((r) => r.dataset.created < (b.created_at || ""));
    if (after) body.insertBefore(fresh, after); else body.append(fresh);
  };
  try {
    const { builds } = await (await api("/builds" + (filter.value ? "?status=" + filter.value : ""))).json();
    body.replaceChildren(...builds.map(row));
    if (builds.length === 0) body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: "5" }, "No builds.")));
  } catch (e) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: "5" }, failure(e))));
  }
  refreshCounters();
  const stopFeed = stream("/builds/events", ["build"], (_, data) => { upsert(JSON.parse(data)); refreshCounters(); });
  // Workers come and go without any job changing: the counters are also refreshed every 5 s.
  const timer = setInterval(refreshCounters, 5000);
  stopView = () => { stopFeed(); clearInterval(timer); };
}

// MARK: one build

function follow(jobID, onEvent) {
  // Events already shown (by seq) are skipped, so a resumed stream never repeats a log line.
  let lastSeq = 0;
  return stream(`/build/${jobID}/events`, ["accepted", "phase", "log", "artifact", "heartbeat", "done", "failed", "cancelled", "message"], (id, data) => {
    const seq = Number(id);
    if (!(seq > lastSeq)) return;
    lastSeq = seq;
    onEvent(JSON.parse(data));
  });
}

function seconds(ms) { return (ms / 1000).toFixed(1) + " s"; }

async function buildView(jobID) {
  const status = el("p", {}, "Loading…");
  const phases = el("ol", { id: "phases", "aria-label": "Phases" });
  const log = el("pre", { class: "log", id: "log", tabindex: "0", "aria-label": "Build log" });
  const problem = el("div", { id: "failure" });
  const actions = el("div", { id: "actions" });
  const artifacts = el("section", { id: "artifacts", "aria-label": "Result" });
  const produced = el("tbody");
  const producedTable = el("table", { id: "produced" },
    el("caption", { class: "skip" }, "As the worker reported them; verify the result to check them"),
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Artifact"), el("th", { scope: "col" }, "SHA-256"),
      el("th", { scope: "col", class: "optional" }, "Size"))), produced);
  show(el("h1", {}, "Build ", el("span", { class: "mono" }, jobID)), status, actions, problem,
    el("h2", {}, "Phases"), phases, el("h2", {}, "Log"), log, el("h2", {}, "Artifacts"), producedTable, artifacts);
  const cancel = el("button", { class: "danger", id: "cancel" }, "Cancel build");
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try { await api(`/build/${jobID}/cancel`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ reason: "cancelled from the dashboard" }) }); }
    catch (e) { problem.replaceChildren(failure(e)); cancel.disabled = false; }
  });
  let phaseStart = null, phaseItem = null, finished = false;
  const closePhase = (time) => {
    if (phaseItem && phaseStart) phaseItem.append(` (${seconds(time - phaseStart)})`);
    phaseItem = null;
  };
  async function refreshStatus() {
    const job = await (await api(`/build/${jobID}`)).json();
    status.replaceChildren("Status ", statusChip(job.status), job.worker_id ? ` on worker ${job.worker_id}` : "");
    actions.replaceChildren(...(["waiting", "building"].includes(job.status) ? [cancel] : []));
    if (job.status === "error" || job.status === "cancelled") {
      const detail = job.error_detail || {};
      const what = job.status === "cancelled"
        ? `Cancelled${job.cancelled_by ? " by " + job.cancelled_by : ""}${job.cancellation_reason ? ": " + job.cancellation_reason : ""}`
        : `Failed in ${job.failure_phase || "?"}: ${detail.message || job.error || "unknown error"}`;
      problem.replaceChildren(el("div", { class: "error-box", role: "alert" }, el("p", {}, what),
        detail.suggested_action ? el("p", {}, "Suggested: " + detail.suggested_action) : "",
        detail.retryable ? el("p", {}, `Retryable (attempt ${detail.attempt} of ${detail.max_attempts}).`) : "",
        detail.request_id ? el("p", { class: "skip" }, "Request id " + detail.request_id) : ""));
    }
    if (job.status === "ready" && !finished) {
      finished = true;
      showResult(jobID, artifacts);
    }
    return job;
  }
  try { await refreshStatus(); } catch (e) { show(failure(e)); return; }
  const stop = follow(jobID, (event) => {
    const time = event.time ? Date.parse(event.time) : Date.now();
    if (event.type === "accepted") refreshStatus().catch((e) => problem.replaceChildren(failure(e)));
    if (event.type === "phase") {
      closePhase(time);
      phaseStart = time;
      phaseItem = el("li", { "data-phase": event.name }, event.name);
      phases.append(phaseItem);
    } else if (event.type === "log") {
      const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.append((event.lines || []).join("\n") + "\n");
      if (atBottom) log.scrollTop = log.scrollHeight;
    } else if (event.type === "artifact") {
      produced.append(el("tr", {}, el("td", {}, event.path), el("td", { class: "mono" }, event.sha256 || ""),
        el("td", { class: "optional" }, event.size != null ? `${event.size} bytes` : "")));
    } else if (["done", "failed", "cancelled"].includes(event.type)) {
      closePhase(time);
      refreshStatus().catch((e) => problem.replaceChildren(failure(e)));
    }
  });
  stopView = stop;
}

async function showResult(jobID, section) {
  const button = el("button", { id: "verify" }, "Verify in this browser");
  const outcome = el("div", { id: "verification", "aria-live": "polite" });
  section.replaceChildren(el("h2", {}, "Result"),
    el("p", {}, el("a", { href: `/build/${jobID}/result`, download: `${jobID}.tar.gz`, id: "download" }, "Download result.tar.gz")),
    button, outcome);
  button.addEventListener("click", async () => {
    button.disabled = true;
    outcome.replaceChildren(el("p", {}, "Downloading and checking…"));
    try {
      // What the gateway serves now, not a cached copy: this is a check of the served result.
      const blob = await (await api(`/build/${jobID}/result`, { cache: "no-store" })).arrayBuffer();
      const keys = (await (await api("/keys")).json()).keys;
      const report = await verifyResult(new Uint8Array(blob), keys, localStorage.getItem("kiln-nonce-" + jobID));
      renderReport(report, outcome);
    } catch (e) {
      outcome.replaceChildren(failure(e));
    }
    button.disabled = false;
  });
}

function renderReport(report, into) {
  const verdict = el("p", { id: "verdict", "data-ok": String(report.ok), class: report.ok ? "pass" : "fail" },
    report.ok ? "VALID: every check this page can make passed." : "INVALID: " + report.error);
  const checks = el("ul", { class: "checks" }, report.checks.map((c) =>
    el("li", { class: c.outcome }, `${c.outcome === "pass" ? "✔" : c.outcome === "fail" ? "✘" : "–"} ${c.name}: ${c.detail}`)));
  const artifacts = el("table", { id: "artifact-list" },
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Artifact"), el("th", { scope: "col" }, "SHA-256"))),
    el("tbody", {}, report.artifacts.map((a) => el("tr", {}, el("td", {}, a.path), el("td", { class: "mono" }, a.sha256)))));
  const provenance = report.provenance ? el("dl", { id: "provenance" },
    ...Object.entries(report.provenance).flatMap(([k, v]) => [el("dt", {}, k), el("dd", { class: "mono" }, v)])) : "";
  into.replaceChildren(verdict, checks, el("h3", {}, "Artifacts"), artifacts, el("h3", {}, "Provenance"), provenance);
}

// MARK: submit

function randomNonce() {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

function submitView() {
  const form = el("form", { id: "submit-form" },
    el("fieldset", {}, el("legend", {}, "Source: a repository, or an archive"),
      el("label", { for: "repo_url" }, "Repository URL"), el("input", { id: "repo_url", name: "repo_url", type: "url", placeholder: "https://host/you/project.git" }),
      el("label", { for: "ref" }, "Ref"), el("input", { id: "ref", name: "ref", type: "text", placeholder: "main" }),
      el("label", { for: "source" }, "Archive (.tar.gz or .zip)"), el("input", { id: "source", name: "source", type: "file", accept: ".tar.gz,.tgz,.zip,.tar" })),
    el("label", { for: "nonce" }, "Nonce (hex; keep it: it ties the result to this request)"),
    el("input", { id: "nonce", name: "nonce", type: "text", value: randomNonce(), pattern: "[0-9a-fA-F]{2,32}", required: "" }),
    el("p", {}, el("button", { type: "submit", id: "submit" }, "Submit build")));
  const outcome = el("div", { "aria-live": "polite" });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData();
    const nonce = form.nonce.value.trim();
    data.append("nonce", nonce);
    if (form.source.files.length) data.append("source", form.source.files[0], form.source.files[0].name);
    else if (form.repo_url.value) {
      data.append("repo_url", form.repo_url.value);
      if (form.ref.value) data.append("ref", form.ref.value);
    } else { outcome.replaceChildren(failure(new Error("give a repository URL or an archive"))); return; }
    try {
      const job = await (await api("/build", { method: "POST", body: data })).json();
      localStorage.setItem("kiln-nonce-" + job.job_id, nonce);
      location.hash = "#/build/" + job.job_id;
    } catch (err) { outcome.replaceChildren(failure(err)); }
  });
  show(el("h1", {}, "Submit a build"), form, outcome);
}

// MARK: routing

function route() {
  stopView();
  stopView = () => {};
  const hash = location.hash || "#/";
  const build = hash.match(/^#\/build\/([A-Za-z0-9_-]{1,128})$/);
  if (build) buildView(build[1]);
  else if (hash.startsWith("#/submit")) submitView();
  else listView();
  main.focus();
}

window.addEventListener("hashchange", route);
route();
