// Replicator's live status page: polls the management API, renders each pipeline, draws
// events/s and lag over the last five minutes, and pauses or resumes with the API token.
//
// Everything the API returns is inserted with textContent or as attribute values, never as
// markup: error messages quote whatever a database or a row said.
"use strict";

(() => {
  const POLL_MS = 1500;
  const REQUEST_TIMEOUT_MS = 5000;
  const WINDOW_MS = 5 * 60 * 1000;
  // Samples further apart than this are not joined by a line (the instance was unreachable).
  const GAP_MS = 5000;
  // sessionStorage only: the token is gone when the tab closes and never appears in a URL.
  const TOKEN_KEY = "replicator.apiToken";
  const STATES = new Set([
    "starting", "snapshotting", "streaming", "paused", "retrying", "stopping", "stopped", "failed",
  ]);
  const PAUSABLE = new Set(["starting", "snapshotting", "streaming"]);
  const COUNTERS = ["transactions", "events", "inserted", "updated", "deleted", "truncated"];

  const samples = new Map(); // pipeline name -> [{t, eps, lag}], oldest first
  const cards = new Map(); // pipeline name -> card
  let reachable = null;
  let lastContact = null;
  let pendingAction = null; // {name, action} waiting for the token dialog

  const $ = (id) => document.getElementById(id);

  // -- formatting -------------------------------------------------------------------------

  const DASH = "—";

  function formatDuration(seconds) {
    if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return DASH;
    const s = Math.max(0, seconds);
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    if (s < 60) return `${s.toFixed(1)} s`;
    if (s < 3600) return `${(s / 60).toFixed(1)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  }

  function formatBytes(bytes) {
    if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) return DASH;
    const units = ["KiB", "MiB", "GiB", "TiB"];
    if (Math.abs(bytes) < 1024) return `${bytes} B`;
    let value = bytes;
    let unit = "B";
    for (const next of units) {
      if (Math.abs(value) < 1024) break;
      value /= 1024;
      unit = next;
    }
    return `${value.toFixed(1)} ${unit}`;
  }

  function formatCount(n) {
    if (n === null || n === undefined || !Number.isFinite(n)) return DASH;
    return n.toLocaleString("en-US");
  }

  function formatRate(rate) {
    if (rate === null || rate === undefined || !Number.isFinite(rate)) return DASH;
    return rate < 10 ? rate.toFixed(1) : Math.round(rate).toLocaleString("en-US");
  }

  function formatTime(iso) {
    if (!iso) return DASH;
    const at = new Date(iso);
    if (Number.isNaN(at.getTime())) return String(iso);
    const today = at.toDateString() === new Date().toDateString();
    return today ? at.toLocaleTimeString() : at.toLocaleString();
  }

  function setTime(el, iso) {
    el.textContent = formatTime(iso);
    if (iso) el.title = String(iso);
    else el.removeAttribute("title");
  }

  // -- requests ---------------------------------------------------------------------------

  // Resolves with {status, body} for any HTTP answer; rejects only when there is none.
  async function request(method, path) {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    try {
      // Relative: the page also works behind a proxy that serves it under a prefix.
      const response = await fetch(path, {
        method, headers, signal: controller.signal, cache: "no-store",
      });
      let body = null;
      if ((response.headers.get("Content-Type") || "").includes("json")) {
        body = await response.json().catch(() => null);
      }
      return { status: response.status, body };
    } catch (err) {
      throw new Error(err.name === "AbortError" ? "no answer within 5 s" : "connection failed");
    } finally {
      clearTimeout(timer);
    }
  }

  function errorText(answer) {
    const body = answer.body || {};
    const message = typeof body.error === "string" ? body.error : `HTTP ${answer.status}`;
    return typeof body.fix === "string" && body.fix ? `${message} Fix: ${body.fix}` : message;
  }

  // -- banner and header ------------------------------------------------------------------

  function showBanner(text, withTokenButton) {
    const banner = $("banner");
    banner.replaceChildren(document.createTextNode(text));
    if (withTokenButton) {
      const button = document.createElement("button");
      button.type = "button";
      button.id = "banner-token";
      button.textContent = "Enter token";
      button.addEventListener("click", () => askToken(null));
      banner.append(" ", button);
    }
    banner.hidden = false;
  }

  function setReachable(ok, problem) {
    reachable = ok;
    document.body.dataset.reachable = String(ok);
    if (ok) {
      lastContact = new Date();
      $("banner").hidden = true;
      $("refreshed").textContent = `Updated ${lastContact.toLocaleTimeString()}`;
    } else {
      const since = lastContact ? ` Last contact ${lastContact.toLocaleTimeString()};` : "";
      showBanner(`${problem}.${since} retrying every ${POLL_MS / 1000} s…`, false);
    }
    for (const card of cards.values()) card.root.classList.toggle("stale", !ok);
  }

  function renderReadiness(answer) {
    const el = $("readiness");
    const body = answer && answer.body;
    if (!body || typeof body.ready !== "boolean") {
      el.dataset.ready = "unknown";
      el.textContent = answer ? `Readiness unknown (HTTP ${answer.status})` : "Readiness unknown";
      return;
    }
    el.dataset.ready = String(body.ready);
    const waiting = Object.entries(body.pipelines || {}).filter(([, p]) => p && !p.ready);
    el.textContent = body.ready
      ? "Ready"
      : `Not ready: ${waiting.map(([name]) => name).join(", ") || "starting"}`;
    for (const [name, card] of cards) {
      const state = (body.pipelines || {})[name];
      const notReady = state && !state.ready;
      card.notReady.hidden = !notReady;
      card.notReady.textContent = notReady ? `Not ready: ${state.reason || "no reason given"}` : "";
    }
  }

  function refreshForgetButton() {
    $("forget-token").hidden = !sessionStorage.getItem(TOKEN_KEY);
  }

  // -- pipeline cards ---------------------------------------------------------------------

  function createCard(name) {
    const root = $("pipeline-template").content.firstElementChild.cloneNode(true);
    root.dataset.pipeline = name;
    const q = (selector) => root.querySelector(selector);
    const card = {
      root,
      name,
      state: null,
      busy: false,
      pauseRequested: false,
      expecting: null, // "pause" or "resume" sent, its effect not yet seen
      errorsKey: "",
      snapshotRows: new Map(),
      badge: q(".state"),
      pending: q(".pause-pending"),
      route: q(".route"),
      pause: q("button.pause"),
      resume: q("button.resume"),
      message: q(".action-message"),
      notReady: q(".not-ready"),
      lag: q(".lag"),
      throughput: q(".throughput"),
      sourceLag: q(".source-lag"),
      consumerLag: q(".consumer-lag"),
      retained: q(".retained"),
      position: q(".position"),
      started: q(".started"),
      canvas: q("canvas.chart"),
      counters: Object.fromEntries(COUNTERS.map((c) => [c, q(`.counters .${c}`)])),
      snapshot: q(".snapshot"),
      snapshotList: q(".snapshot-tables"),
      errors: q(".errors"),
      errorList: q(".errors ul"),
    };
    q(".name").textContent = name;
    card.pause.addEventListener("click", () => requestAction(name, "pause"));
    card.resume.addEventListener("click", () => requestAction(name, "resume"));
    cards.set(name, card);
    return card;
  }

  function setState(card, state) {
    card.state = state;
    const known = STATES.has(state) ? state : "unknown";
    card.root.dataset.state = known;
    card.badge.textContent = state || "unknown";
    card.badge.className = `state state-${known}`;
    refreshButtons(card);
  }

  function refreshButtons(card) {
    // A pause takes effect at the next transaction boundary; until then it can be undone.
    const pausing = card.pauseRequested && PAUSABLE.has(card.state);
    card.pending.hidden = !pausing;
    card.pause.disabled = card.busy || pausing || !PAUSABLE.has(card.state);
    card.resume.disabled = card.busy || !(card.state === "paused" || pausing);
  }

  function updateCard(card, p) {
    card.pauseRequested = p.pause_requested === true;
    setState(card, p.state);
    if (card.expecting === "pause" && p.state === "paused") {
      showMessage(card, "Paused.", "ok");
      card.expecting = null;
    } else if (card.expecting === "resume" && p.state !== "paused") {
      showMessage(card, `Resumed: now ${p.state}.`, "ok");
      card.expecting = null;
    }
    card.route.textContent = `${p.source_type || "?"} → ${p.sink_type || "?"}`;
    card.lag.textContent = formatDuration(p.lag_seconds);
    card.throughput.textContent = `${formatRate(p.events_per_second)} events/s`;
    card.sourceLag.textContent = formatBytes(p.source_lag_bytes);
    // Kafka sources only.
    const messages = p.consumer_lag_messages;
    card.consumerLag.parentElement.hidden = !Number.isFinite(messages);
    card.consumerLag.textContent = `${formatCount(messages)} messages`;
    card.retained.textContent = formatBytes(p.retained_bytes);
    card.position.textContent = p.position || DASH;
    if (p.state === "paused" && p.paused_at) {
      setTime(card.started, p.paused_at);
      card.started.textContent = `paused at ${card.started.textContent}`;
    } else {
      setTime(card.started, p.started_at);
    }
    const counters = p.counters || {};
    for (const name of COUNTERS) card.counters[name].textContent = formatCount(counters[name]);
    updateSnapshot(card, Array.isArray(p.snapshot) ? p.snapshot : []);
    let errors = Array.isArray(p.errors) ? p.errors : [];
    if (errors.length === 0 && p.last_error) errors = [p.last_error];
    updateErrors(card, errors);
  }

  function updateSnapshot(card, tables) {
    card.snapshot.hidden = tables.length === 0;
    const seen = new Set();
    for (const t of tables) {
      seen.add(t.table);
      let row = card.snapshotRows.get(t.table);
      if (!row) {
        row = { li: document.createElement("li") };
        row.li.dataset.table = t.table;
        row.name = row.li.appendChild(document.createElement("span"));
        row.name.className = "table-name";
        row.name.textContent = t.table;
        row.bar = row.li.appendChild(document.createElement("progress"));
        row.bar.max = 1;
        row.detail = row.li.appendChild(document.createElement("span"));
        row.detail.className = "detail";
        card.snapshotRows.set(t.table, row);
      }
      card.snapshotList.append(row.li); // keeps the API's order
      row.li.dataset.state = t.state;
      const estimated = t.rows_estimated;
      if (t.state === "done") {
        row.bar.value = 1;
      } else if (Number.isFinite(estimated) && estimated > 0) {
        row.bar.value = Math.min(1, (t.rows_copied || 0) / estimated);
      } else if (t.state === "copying") {
        row.bar.removeAttribute("value"); // indeterminate: the size is unknown
      } else {
        row.bar.value = 0;
      }
      const parts = [t.state];
      const of = Number.isFinite(estimated) ? ` of ~${formatCount(estimated)}` : "";
      parts.push(`${formatCount(t.rows_copied || 0)}${of} rows`);
      if (t.state === "copying" && Number.isFinite(t.rows_per_second)) {
        parts.push(`${formatRate(t.rows_per_second)} rows/s`);
      }
      if (t.state === "copying" && Number.isFinite(t.eta_seconds)) {
        parts.push(`ETA ${formatDuration(t.eta_seconds)}`);
      }
      row.detail.textContent = parts.join(" · ");
    }
    for (const [table, row] of card.snapshotRows) {
      if (!seen.has(table)) {
        row.li.remove();
        card.snapshotRows.delete(table);
      }
    }
  }

  function updateErrors(card, errors) {
    card.errors.hidden = errors.length === 0;
    const key = JSON.stringify(errors);
    if (key === card.errorsKey) return; // unchanged: leave any text selection alone
    card.errorsKey = key;
    const items = errors
      .slice()
      .reverse() // newest first
      .map((e) => {
        const li = document.createElement("li");
        const at = li.appendChild(document.createElement("time"));
        at.className = "at";
        setTime(at, e && e.at);
        if (e && e.at) at.dateTime = String(e.at);
        const kind = li.appendChild(document.createElement("span"));
        kind.className = "kind";
        kind.textContent = (e && e.kind) || "Error";
        const message = li.appendChild(document.createElement("span"));
        message.className = "message";
        message.textContent = e && e.message != null ? String(e.message) : "";
        return li;
      });
    card.errorList.replaceChildren(...items);
  }

  function render(pipelines) {
    const main = $("pipelines");
    const seen = new Set();
    let previous = $("empty");
    for (const p of pipelines) {
      if (!p || typeof p.name !== "string") continue;
      seen.add(p.name);
      const card = cards.get(p.name) || createCard(p.name);
      // Move a card only when it is out of place, so a focused button keeps its focus.
      if (previous.nextElementSibling !== card.root) previous.after(card.root);
      previous = card.root;
      updateCard(card, p);
      addSample(p);
      drawChart(card.canvas, samples.get(p.name));
    }
    for (const [name, card] of cards) {
      if (!seen.has(name)) {
        card.root.remove();
        cards.delete(name);
        samples.delete(name);
      }
    }
    $("empty").hidden = seen.size > 0;
    main.dataset.count = String(seen.size);
  }

  // -- chart ------------------------------------------------------------------------------

  function addSample(p) {
    const now = Date.now();
    const list = samples.get(p.name) || [];
    const number = (x) => (Number.isFinite(x) ? x : null);
    list.push({ t: now, eps: number(p.events_per_second), lag: number(p.lag_seconds) });
    while (list.length && list[0].t < now - WINDOW_MS) list.shift();
    samples.set(p.name, list);
  }

  // The smallest 1, 2 or 5 times a power of ten that is at least `value`.
  function niceCeil(value, floor) {
    const v = Math.max(value, floor);
    const power = 10 ** Math.floor(Math.log10(v));
    for (const step of [1, 2, 5, 10]) if (step * power >= v) return step * power;
    return 10 * power;
  }

  function drawChart(canvas, points) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 480;
    const height = canvas.clientHeight || 150;
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);

    const style = getComputedStyle(canvas);
    const color = (name, fallback) => style.getPropertyValue(name).trim() || fallback;
    const eventsColor = color("--events-color", "#2563eb");
    const lagColor = color("--lag-color", "#d97706");
    const gridColor = color("--grid-color", "#e5e7eb");
    const textColor = color("--muted-color", "#6b7280");

    const left = 48;
    const right = 52;
    const top = 8;
    const bottom = 18;
    const plotW = Math.max(1, width - left - right);
    const plotH = Math.max(1, height - top - bottom);
    const now = Date.now();
    const start = now - WINDOW_MS;
    const maxEps = niceCeil(Math.max(0, ...points.map((s) => s.eps ?? 0)), 1);
    const maxLag = niceCeil(Math.max(0, ...points.map((s) => s.lag ?? 0)), 0.1);
    const x = (t) => left + ((t - start) / WINDOW_MS) * plotW;

    ctx.lineWidth = 1;
    ctx.strokeStyle = gridColor;
    ctx.beginPath();
    for (let i = 0; i <= 4; i += 1) {
      const y = Math.round(top + (plotH * i) / 4) + 0.5;
      ctx.moveTo(left, y);
      ctx.lineTo(left + plotW, y);
    }
    ctx.stroke();

    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    ctx.fillStyle = eventsColor;
    ctx.textAlign = "right";
    ctx.fillText(formatRate(maxEps), left - 6, top + 4);
    ctx.fillText("0", left - 6, top + plotH);
    ctx.fillStyle = lagColor;
    ctx.textAlign = "left";
    ctx.fillText(formatDuration(maxLag), left + plotW + 6, top + 4);
    ctx.fillText("0", left + plotW + 6, top + plotH);
    ctx.fillStyle = textColor;
    ctx.textBaseline = "bottom";
    ctx.fillText("−5 min", left, height);
    ctx.textAlign = "right";
    ctx.fillText("now", left + plotW, height);

    const series = (key, max, stroke) => {
      ctx.strokeStyle = stroke;
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      let previous = null;
      for (const s of points) {
        const value = s[key];
        if (value === null) {
          previous = null;
          continue;
        }
        const px = x(s.t);
        const py = top + plotH - (Math.min(value, max) / max) * plotH;
        if (previous === null || s.t - previous > GAP_MS) ctx.moveTo(px, py);
        else ctx.lineTo(px, py);
        previous = s.t;
      }
      ctx.stroke();
    };
    series("eps", maxEps, eventsColor);
    series("lag", maxLag, lagColor);
  }

  // -- pause and resume -------------------------------------------------------------------

  function requestAction(name, action) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) sendAction(name, action);
    else askToken({ name, action });
  }

  function askToken(action) {
    pendingAction = action;
    $("token-input").value = "";
    const dialog = $("token-dialog");
    if (!dialog.open) dialog.showModal();
    $("token-input").focus();
  }

  function showMessage(card, text, kind) {
    card.message.textContent = text;
    card.message.dataset.kind = kind;
    card.message.hidden = false;
  }

  async function sendAction(name, action) {
    const card = cards.get(name);
    if (!card || card.busy) return;
    card.busy = true;
    refreshButtons(card);
    showMessage(card, action === "pause" ? "Pausing…" : "Resuming…", "pending");
    try {
      const answer = await request("POST", `pipelines/${encodeURIComponent(name)}/${action}`);
      if (answer.status === 200) {
        const body = answer.body || {};
        if (typeof body.pause_requested === "boolean") card.pauseRequested = body.pause_requested;
        if (typeof body.state === "string") setState(card, body.state);
        card.expecting = action;
        if (action === "pause" && body.state === "paused") {
          showMessage(card, "Paused.", "ok");
          card.expecting = null;
        } else if (action === "pause") {
          const when = "it takes effect at the next transaction boundary";
          showMessage(card, `Pause requested: ${when}.`, "pending");
        } else if (body.state !== "paused") {
          showMessage(card, `Resumed: now ${body.state}.`, "ok");
          card.expecting = null;
        } else {
          showMessage(card, "Resume requested.", "pending");
        }
      } else {
        if (answer.status === 401 || answer.status === 403) {
          // A refused token is forgotten, so the next click asks again.
          sessionStorage.removeItem(TOKEN_KEY);
          refreshForgetButton();
        }
        showMessage(card, `Refused (HTTP ${answer.status}): ${errorText(answer)}`, "error");
      }
    } catch (err) {
      showMessage(card, `Instance unreachable: ${err.message}.`, "error");
    } finally {
      card.busy = false;
      refreshButtons(card);
    }
  }

  function wireTokenDialog() {
    const dialog = $("token-dialog");
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token-input").value.trim();
      if (!token) return;
      sessionStorage.setItem(TOKEN_KEY, token);
      $("token-input").value = "";
      refreshForgetButton();
      const action = pendingAction; // before close(), whose handler forgets it
      pendingAction = null;
      dialog.close();
      // From the banner (reads need the token), the next poll sends it.
      if (action) sendAction(action.name, action.action);
    });
    $("token-cancel").addEventListener("click", () => dialog.close());
    dialog.addEventListener("close", () => {
      pendingAction = null;
    });
    $("forget-token").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      refreshForgetButton();
    });
    refreshForgetButton();
  }

  // -- polling ----------------------------------------------------------------------------

  let timer = null;

  async function poll() {
    clearTimeout(timer);
    const [pipelines, ready] = await Promise.allSettled([
      request("GET", "pipelines"),
      request("GET", "health/ready"),
    ]);
    if (pipelines.status === "rejected") {
      setReachable(false, `Instance unreachable: ${pipelines.reason.message}`);
    } else {
      const answer = pipelines.value;
      const list = answer.body && answer.body.pipelines;
      if (answer.status === 401 || answer.status === 403) {
        // api.auth_reads: even reading needs the token.
        reachable = false;
        document.body.dataset.reachable = "false";
        const why = errorText(answer);
        showBanner(`This instance needs the API token to show its status. ${why}`, true);
      } else if (answer.status !== 200 || !Array.isArray(list)) {
        setReachable(false, `The API answered HTTP ${answer.status}: ${errorText(answer)}`);
      } else {
        render(list);
        setReachable(true);
      }
    }
    renderReadiness(ready.status === "fulfilled" ? ready.value : null);
    timer = setTimeout(poll, POLL_MS);
  }

  // A read-only view for tests and the curious: copies, so nothing here can be changed.
  window.replicatorStatus = Object.freeze({
    get samples() {
      const copy = {};
      for (const [name, list] of samples) copy[name] = list.map((s) => ({ ...s }));
      return copy;
    },
    get reachable() {
      return reachable;
    },
  });

  wireTokenDialog();
  poll();
})();
