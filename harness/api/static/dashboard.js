// The harness dashboard: live from the status and log streams (Server-Sent Events), steering
// through the same POST routes as curl. No framework, no build step. The API token, when the
// server needs one, stays in this tab's sessionStorage and travels only in a bearer header.
"use strict";

(() => {
  const PHASES = ["IDLE", "GENERATING", "WAITING_VIP_DRAIN", "ENQUEUE_NORMAL", "WAITING_NORMAL_DRAIN"];
  const ENDS = ["DONE", "ABORTED", "ERROR"];
  const ACTIVE = new Set(PHASES.slice(1));
  const LABELS = {
    IDLE: "idle", GENERATING: "generating", WAITING_VIP_DRAIN: "VIP drain",
    ENQUEUE_NORMAL: "enqueue NORMAL", WAITING_NORMAL_DRAIN: "NORMAL drain",
    DONE: "done", ABORTED: "aborted", ERROR: "error",
  };
  const LOG_KEEP = 500; // lines shown
  const RATE_WINDOW_S = 1.0; // "orders/s now": over the last second
  const TOKEN_KEY = "harness.apiToken";
  const tokenRequired = document.querySelector('meta[name="harness-token-required"]').content === "true";

  const $ = (id) => document.getElementById(id);
  const fmt = (n) => (n === null || n === undefined || Number.isNaN(n)) ? "–" : Math.round(n).toLocaleString("en-US");
  const fmtRate = (n) => (n === null || n === undefined) ? "–" : `${fmt(n)}/s`;
  function fmtMs(ms) {
    if (ms === null || ms === undefined) return "–";
    if (ms < 1000) return `${ms.toFixed(ms < 10 ? 1 : 0)} ms`;
    const s = ms / 1000;
    if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
    const m = Math.floor(s / 60);
    return `${m} min ${Math.round(s - 60 * m)} s`;
  }
  const pct = (a, b) => (b ? Math.min(100, (100 * a) / b) : 0);

  // -- state -------------------------------------------------------------------------------
  const state = {
    doc: null,
    runId: null,
    phase: null,
    samples: [], // {t, vip, normal}: the live counts of the current run
    points: [[], [], []], // x (s since start), VIP orders/s, NORMAL orders/s
    fromRecord: false, // the chart shows the record's timeline (exact) rather than live points
    recordFor: null, // run id whose final record was shown
    logLines: [],
  };

  // -- token -------------------------------------------------------------------------------
  function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
  if (tokenRequired) {
    $("token-box").hidden = false;
    $("token").value = token();
    $("token-box").addEventListener("submit", (e) => e.preventDefault());
    $("token").addEventListener("input", (e) => {
      const value = e.target.value.trim();
      if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY);
    });
  }

  async function post(path, params) {
    const query = params ? `?${new URLSearchParams(params)}` : "";
    const headers = {};
    if (token()) headers.Authorization = `Bearer ${token()}`;
    const answer = await fetch(path + query, { method: "POST", headers });
    let body = {};
    try { body = await answer.json(); } catch (_) { body = {}; }
    return { ok: answer.ok, status: answer.status, body };
  }

  async function getJson(path) {
    const answer = await fetch(path, { headers: { Accept: "application/json" } });
    if (!answer.ok) throw new Error(`${path}: ${answer.status}`);
    return answer.json();
  }

  function say(text, kind) {
    const el = $("message");
    el.textContent = text;
    el.className = `message ${kind || ""}`;
  }

  function refused(answer, what) {
    const why = (answer.body && answer.body.error) || `HTTP ${answer.status}`;
    say(`${what} refused (${answer.status}): ${why}`, "error");
    if (answer.status === 401 && tokenRequired) $("token").focus();
  }

  // -- chart -------------------------------------------------------------------------------
  let chart = null;
  function makeChart() {
    const el = $("chart");
    const opts = {
      width: Math.max(300, el.clientWidth),
      height: 260,
      scales: { x: { time: false } },
      axes: [
        { label: "seconds since the run started" },
        { label: "orders/s", size: 80, values: (u, ticks) => ticks.map((v) => fmt(v)) },
      ],
      series: [
        { label: "second", value: (u, v) => (v === null ? "–" : v.toFixed(1)) },
        { label: "VIP", stroke: "#c2410c", width: 2, points: { show: true, size: 5 }, value: (u, v) => fmtRate(v) },
        { label: "NORMAL", stroke: "#2563eb", width: 2, points: { show: true, size: 5 }, value: (u, v) => fmtRate(v) },
      ],
    };
    chart = new uPlot(opts, state.points, el);
    window.addEventListener("resize", () => chart.setSize({ width: Math.max(300, el.clientWidth), height: 260 }));
  }

  function drawChart() {
    if (!chart) return;
    chart.setData(state.points);
    $("chart").dataset.points = String(state.points[0].length);
  }

  function resetRun(runId) {
    state.runId = runId;
    state.samples = [];
    state.points = [[], [], []];
    state.fromRecord = false;
    state.recordFor = null;
    $("barrier").hidden = true;
    $("chart-note").textContent = "orders/s over the last second, as the run goes";
    drawChart();
  }

  // A live point: orders/s of each priority over the last second of the run.
  function addSample(doc) {
    if (!doc.isProcessing || doc.totalTimeMs === null || state.fromRecord) return null;
    const now = { t: doc.totalTimeMs / 1000, vip: doc.counts.vip, normal: doc.counts.normal };
    const last = state.samples[state.samples.length - 1];
    if (last && now.t <= last.t) return null;
    state.samples.push(now);
    let ref = null;
    for (let i = state.samples.length - 2; i >= 0; i--) {
      ref = state.samples[i];
      if (now.t - ref.t >= RATE_WINDOW_S) break;
    }
    if (!ref || now.t - ref.t < 0.2) return null;
    const dt = now.t - ref.t;
    const rate = { vip: (now.vip - ref.vip) / dt, normal: (now.normal - ref.normal) / dt };
    state.points[0].push(now.t);
    state.points[1].push(rate.vip);
    state.points[2].push(rate.normal);
    while (state.samples.length > 2 && now.t - state.samples[1].t > 2 * RATE_WINDOW_S) state.samples.shift();
    drawChart();
    return rate;
  }

  // After the run: the exact per-bin counts its record holds, per second of the run.
  function chartFromRecord(record) {
    const tl = record.timeline;
    if (!tl || !tl.binMs || !(tl.vip || []).length) return;
    const totalMs = tl.binMs * tl.vip.length;
    const per = totalMs > 10000 ? Math.max(1, Math.round(1000 / tl.binMs)) : 1; // 1 s bins for long runs
    const width = (tl.binMs * per) / 1000;
    const xs = []; const vips = []; const normals = [];
    for (let i = 0; i < tl.vip.length; i += per) {
      let v = 0; let n = 0;
      for (let j = i; j < Math.min(i + per, tl.vip.length); j++) { v += tl.vip[j] || 0; n += (tl.normal || [])[j] || 0; }
      xs.push((i / per + 1) * width);
      vips.push(v / width);
      normals.push(n / width);
    }
    state.points = [xs, vips, normals];
    state.fromRecord = true;
    $("chart-note").textContent = `orders/s per ${fmtMs(width * 1000)} of the run, from its record`;
    drawChart();
  }

  // -- status ------------------------------------------------------------------------------
  function renderStepper(doc) {
    const times = {};
    (doc.phases || []).forEach((p) => { times[p.phase] = p.timeMs; });
    const ended = ENDS.includes(doc.phase) ? doc.phase : null;
    const current = PHASES.indexOf(doc.phase);
    const steps = PHASES.map((name, i) => {
      let cls = "todo";
      if (ended) cls = (name in times || i === 0) ? "done" : "todo";
      else if (i < current) cls = "done";
      else if (i === current) cls = "current";
      const t = name in times ? fmtMs(times[name]) : "";
      return `<li class="${cls}" data-phase="${name}"><span class="name">${LABELS[name]}</span><span class="time">${t}</span></li>`;
    });
    const endName = ended || "DONE";
    const endTime = ended && doc.totalTimeMs !== null ? `total ${fmtMs(doc.totalTimeMs)}` : "";
    steps.push(`<li class="${ended ? `ended ${ended}` : "todo"}" data-phase="${endName}"><span class="name">${ended ? LABELS[ended] : "done / aborted / error"}</span><span class="time">${endTime}</span></li>`);
    $("stepper").innerHTML = steps.join("");
  }

  function bar(id, done, of) {
    $(`bar-${id}`).style.width = `${pct(done, of)}%`;
    $(`num-${id}`).textContent = of ? `${fmt(done)} / ${fmt(of)}` : fmt(done);
  }

  function renderSettings(settings) {
    if (!settings) return;
    // Counts read as counts (8,000), as everywhere else on the page; a seed is a name, not a count.
    const shown = (k, v) => (Number.isInteger(v) && k !== "seed" ? fmt(v) : String(v));
    const rows = Object.entries(settings).map(([k, v]) => `<tr><td>${k}</td><td>${escapeHtml(shown(k, v))}</td></tr>`);
    $("settings").tBodies[0].innerHTML = rows.join("");
  }

  function escapeHtml(text) {
    return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  function renderStatus(doc) {
    const previousPhase = state.phase;
    state.doc = doc;
    if (doc.lastRunId !== state.runId) resetRun(doc.lastRunId);
    state.phase = doc.phase;
    $("run-id").textContent = doc.lastRunId || "none yet";
    const badge = $("phase");
    badge.textContent = doc.phase;
    badge.className = `badge ${ACTIVE.has(doc.phase) ? "active" : doc.phase}`;
    document.title = `harness: ${doc.phase}${doc.lastRunId ? ` ${doc.lastRunId}` : ""}`;
    renderStepper(doc);
    const c = doc.counts;
    bar("generated", doc.progress.generated, doc.progress.target);
    bar("vip", c.vip, c.vipGenerated);
    bar("normal", c.normal, c.normalGenerated);
    bar("total", doc.progress.processedTotal, doc.progress.target);
    $("elapsed").textContent = fmtMs(doc.totalTimeMs);
    $("eta").textContent = ENDS.includes(doc.phase) ? `none: ended at ${doc.eta.progressPercent.toFixed(1)} %`
      : doc.eta.estimatedMs === null ? "–"
      : `${fmtMs(doc.eta.estimatedMs)} (${doc.eta.progressPercent.toFixed(1)} %)`;
    const rate = addSample(doc);
    if (rate) $("rate-now").textContent = fmtRate(rate.vip + rate.normal);
    else if (!doc.isProcessing) $("rate-now").textContent = "–";
    $("rate-overall").textContent = fmtRate(doc.throughput.overall);
    $("rate-vip").textContent = fmtRate(doc.throughput.vip);
    $("rate-normal").textContent = fmtRate(doc.throughput.normal);
    const err = $("run-error");
    err.hidden = !doc.error;
    err.textContent = doc.error ? `error: ${doc.error.split("\n")[0]}` : "";
    renderSettings(doc.settings);
    $("cancel").disabled = !doc.isProcessing;
    renderRunWorkers(doc.workers);
    if (previousPhase !== doc.phase) {
      if (ENDS.includes(doc.phase) && previousPhase !== null) refreshWorkers(); // the pool has stopped
      if (ENDS.includes(doc.phase) && doc.lastRunId) finalRecord(doc.lastRunId, doc.phase, 0);
      else if (ACTIVE.has(doc.phase) && previousPhase !== null && !ACTIVE.has(previousPhase)) refreshHistory();
    }
  }

  // The record is saved just after the live state says the run ended: ask until it is final.
  async function finalRecord(runId, phase, tries) {
    if (state.recordFor === runId || runId !== state.runId) return;
    let record = null;
    try { record = await getJson(`/pedidos/runs/${encodeURIComponent(runId)}`); } catch (_) { record = null; }
    if (!record || record.phase !== phase) {
      if (tries < 40) setTimeout(() => finalRecord(runId, phase, tries + 1), 250);
      return;
    }
    if (runId !== state.runId) return;
    state.recordFor = runId;
    chartFromRecord(record);
    renderBarrier(record);
    refreshHistory();
  }

  function renderBarrier(record) {
    const el = $("barrier");
    const b = record.barrier;
    if (!b) {
      el.hidden = false;
      el.className = "barrier";
      el.textContent = `Barrier: not measured (run ${record.phase})`;
      return;
    }
    el.hidden = false;
    el.className = `barrier ${b.held ? "held" : "violated"}`;
    const gap = typeof b.gapMs === "number" ? `, gap ${b.gapMs.toFixed(1)} ms` : "";
    const when = b.lastVipProcessedAt && b.firstNormalStartedAt
      ? ` (last VIP ${b.lastVipProcessedAt}, first NORMAL ${b.firstNormalStartedAt})` : "";
    el.textContent = b.held
      ? `Barrier held: no NORMAL order started before the last VIP order was done${gap}${when}`
      : `Barrier VIOLATED${gap}: a NORMAL order started before the last VIP order was done`;
  }

  // -- history and workers -----------------------------------------------------------------
  async function refreshHistory() {
    let runs;
    try { runs = await getJson("/pedidos/runs?limit=20"); } catch (_) { return; }
    const rows = runs.map((r) => {
      const id = escapeHtml(r.runId);
      const orders = r.counts ? r.counts.generated || (r.parameters || {}).quantity : (r.parameters || {}).quantity;
      const rate = r.throughput ? r.throughput.overall : null;
      const b = r.barrier;
      const gap = b && typeof b.gapMs === "number" ? ` (${b.gapMs.toFixed(1)} ms)` : "";
      const barrier = b ? (b.held ? `held${gap}` : `VIOLATED${gap}`) : "–";
      return `<tr data-run-id="${id}"><td><a href="/pedidos/runs/${encodeURIComponent(r.runId)}">${id}</a></td>`
        + `<td>${escapeHtml((r.startedAt || "").replace("T", " ").slice(0, 19))}</td>`
        + `<td class="status-${escapeHtml(r.phase || "")}">${escapeHtml(r.phase || "")}</td>`
        + `<td class="n">${fmt(orders)}</td><td class="n">${fmt(rate)}</td>`
        + `<td class="n">${fmtMs(r.totalTimeMs)}</td><td>${barrier}</td></tr>`;
    });
    $("history").tBodies[0].innerHTML = rows.join("") || '<tr><td colspan="7">no runs yet</td></tr>';
  }

  // Registered workers and the queues' pause: read on load, when a run ends and after
  // pause/resume (not polled: 50 dashboards polling it would cost the run: ~3 ms of server CPU
  // a read). The workers that joined the run, on any host, come with every status event.
  async function refreshWorkers() {
    let q;
    try { q = await getJson("/pedidos/queue/status"); } catch (_) { return; }
    const count = Array.isArray(q.workers) ? q.workers.length : q.workers;
    const at = new Date().toTimeString().slice(0, 8);
    // Said with the time of the read: it is not live (the list below, from the status, is).
    $("workers-summary").textContent = `${fmt(count)} worker(s) registered with the queues at ${at}`
      + `${q.paused ? " · queues PAUSED" : ""}`;
  }

  function renderRunWorkers(list) {
    $("workers").innerHTML = (list || []).map((w) => {
      const name = w.pid === null || w.pid === undefined ? w.host : `${w.host}:${w.pid}`;
      return `<li>${escapeHtml(String(name))} · ${fmt(w.batches)} batch(es) in this run</li>`;
    }).join("");
  }

  // -- logs --------------------------------------------------------------------------------
  function addLogLines(lines) {
    const el = $("log");
    const atBottom = el.scrollTop + el.clientHeight >= el.scrollHeight - 4;
    state.logLines.push(...lines);
    if (state.logLines.length > LOG_KEEP) state.logLines.splice(0, state.logLines.length - LOG_KEEP);
    el.textContent = state.logLines.join("\n");
    if (atBottom) el.scrollTop = el.scrollHeight;
    logNote();
  }

  function logNote() {
    $("log-note").textContent = state.logLines.length ? ""
      : "No log lines yet. Each run logs its phases and progress (every LOG_PROGRESS_EVERY_MS) here, "
        + "from every process on every host; BACKEND_LOGS=true also writes them to a file.";
  }

  // -- streams -----------------------------------------------------------------------------
  // An EventSource reconnects by itself after a drop (the server asks for 1 s); one the
  // browser gave up on (an HTTP error) is opened again here.
  function stream(url, handlers, onState) {
    let source = null;
    let wasDown = false;
    function open() {
      source = new EventSource(url);
      source.addEventListener("open", () => {
        onState(true, wasDown);
        wasDown = false;
      });
      Object.entries(handlers).forEach(([event, handle]) => {
        source.addEventListener(event, (e) => {
          if (e.data === undefined) return;
          handle(JSON.parse(e.data));
        });
      });
      source.addEventListener("error", (e) => {
        if (e.data !== undefined) return; // the server's own "error" event, handled above
        wasDown = true;
        onState(false, false);
        if (source.readyState === EventSource.CLOSED) setTimeout(open, 1000);
      });
    }
    open();
  }

  function setConnection(live) {
    const el = $("conn");
    el.textContent = live ? "live" : "reconnecting…";
    el.className = `conn ${live ? "live" : "down"}`;
  }

  function banner(text) {
    const el = $("banner");
    el.hidden = !text;
    el.textContent = text || "";
  }

  stream("/pedidos/stream?intervalMs=200", {
    status: (doc) => { banner(""); renderStatus(doc); },
    error: (doc) => banner(doc.error || "the server cannot read the status"),
  }, (live, recovered) => {
    setConnection(live);
    if (live && recovered) { refreshHistory(); refreshWorkers(); }
  });

  stream("/pedidos/logs/stream?lines=200", {
    log: (doc) => addLogLines(doc.lines),
    error: (doc) => { $("log-note").textContent = doc.error || "the server cannot read the log lines"; },
  }, () => {});

  // -- controls ----------------------------------------------------------------------------
  $("start-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const params = {};
    new FormData(e.target).forEach((value, name) => {
      const text = String(value).trim();
      if (text !== "") params[name] = text;
    });
    $("start").disabled = true;
    say("starting…");
    try {
      const answer = await post("/pedidos/generate", params);
      if (answer.ok) say(answer.body.message || `run ${answer.body.runId} started`, "ok");
      else refused(answer, "start");
    } catch (err) {
      say(`start failed: ${err.message}`, "error");
    } finally {
      $("start").disabled = false;
    }
  });

  $("cancel").addEventListener("click", async () => {
    $("cancel").disabled = true;
    say("cancelling: running batches stop at their next check…");
    const resetLogs = $("reset-logs").checked;
    try {
      const answer = await post("/pedidos/cancel", {
        purge: $("purge").checked, removePending: $("remove-pending").checked, resetLogs,
      });
      if (answer.ok) {
        say(answer.body.message, answer.body.cancelled ? "ok" : "");
        if (resetLogs) { state.logLines = []; $("log").textContent = ""; logNote(); }
      } else refused(answer, "cancel");
    } catch (err) {
      say(`cancel failed: ${err.message}`, "error");
    }
  });

  async function simple(path, what, done) {
    try {
      const answer = await post(path);
      if (answer.ok) { say(done(answer.body), "ok"); refreshWorkers(); } else refused(answer, what);
    } catch (err) {
      say(`${what} failed: ${err.message}`, "error");
    }
  }
  $("pause").addEventListener("click", () => simple("/pedidos/queue/pause", "pause", () => "queues paused: workers take no new job"));
  $("resume").addEventListener("click", () => simple("/pedidos/queue/resume", "resume", () => "queues resumed"));
  $("reset").addEventListener("click", () => simple("/pedidos/reset", "reset",
    (b) => `reset: ${fmt(b.orders)} orders and ${fmt(b.jobs)} jobs deleted; run history kept`));

  // -- start -------------------------------------------------------------------------------
  makeChart();
  logNote();
  refreshHistory();
  refreshWorkers();
})();
