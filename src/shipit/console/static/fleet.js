// Fleet page: polls /ui/api/fleet and redraws in place (no reload): replicas, queues,
// latency and SLO attainment over time, scale decisions, cold starts, rollouts and alerts.
"use strict";

(function () {
  const S = window.shipit;
  const { el } = S;
  const params = new URLSearchParams(location.search);
  const intervalMs = Math.max(250, Number(params.get("interval_ms")) || 2000);
  const sections = new Map();  // deployment name -> its <section>
  let paused = false;
  let timer = null;
  let lastOk = 0;

  function tile(label, value, field) {
    return el("div", { class: "tile", "data-field": field || null },
              el("div", { class: "label" }, label), el("div", { class: "value" }, value));
  }

  function ago(unixS) {
    const s = Math.max(0, Date.now() / 1000 - unixS);
    if (s < 90) return `${Math.round(s)} s ago`;
    if (s < 5400) return `${Math.round(s / 60)} min ago`;
    return `${(s / 3600).toFixed(1)} h ago`;
  }

  function duration(s) {
    if (s === null || s === undefined) return "–";
    if (s < 90) return `${S.num(s, 1)} s`;
    if (s < 5400) return `${S.num(s / 60, 1)} min`;
    return `${S.num(s / 3600, 1)} h`;
  }

  async function poll() {
    clearTimeout(timer);
    if (paused) return;
    try {
      const query = { window_s: params.get("window_s") || "30", step_s: params.get("step_s") || "5",
                      span_s: params.get("span_s") || "300" };
      const data = await S.api("api/fleet?" + new URLSearchParams(query));
      render(data);
      lastOk = Date.now();
      S.fill(document.getElementById("fleet-error"));
      setLive(`updated ${new Date().toLocaleTimeString()}, every ${S.num(intervalMs / 1000, 1)} s`, false);
    } catch (e) {
      S.fill(document.getElementById("fleet-error"), el("div", { class: "error", role: "alert" }, e.message));
      setLive(lastOk ? `no answer since ${new Date(lastOk).toLocaleTimeString()}` : "no answer", true);
      if (e.status === 404 || e.status === 401 || e.status === 403) return;  // polling would not help
    }
    timer = setTimeout(poll, intervalMs);
  }

  function setLive(text, stale) {
    document.getElementById("live-text").textContent = text;
    document.getElementById("live").classList.toggle("stale", stale);
  }

  function render(data) {
    const reps = data.deployments.flatMap((d) => d.replicas);
    const count = (state) => reps.filter((r) => r.state === state).length;
    S.fill(document.getElementById("summary"), 
      tile("Uptime", duration(data.uptime_s)),
      tile("Deployments", data.deployments.length),
      tile("Replicas ready", `${count("ready")} of ${reps.length}`, "ready"),
      tile("Unhealthy", count("unhealthy"), "unhealthy"),
      tile("Starting", count("starting")),
      tile("Queued", data.deployments.reduce((s, d) => s + d.queue_depth, 0), "queued"),
      tile("In flight", data.deployments.reduce((s, d) => s + d.in_flight, 0)),
      tile("Active alerts", data.alerts.length));
    renderAlerts(data.alerts);
    renderRollouts(data.rollouts);
    const host = document.getElementById("deployments");
    const names = new Set(data.deployments.map((d) => d.name));
    for (const [name, node] of sections) if (!names.has(name)) { node.remove(); sections.delete(name); }
    for (const d of data.deployments) {
      let node = sections.get(d.name);
      if (!node) {
        node = el("section", { class: "deployment", "data-deployment": d.name, "aria-labelledby": "dep-" + d.name });
        sections.set(d.name, node);
        host.append(node);
      }
      renderDeployment(node, d);
    }
    S.paintSwatches(host);
    paintKv(host);
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
    document.body.dataset.points = String(Math.max(0, ...data.deployments.map((d) => d.series.length)));
  }

  function renderAlerts(alerts) {
    const box = document.getElementById("alerts");
    if (!alerts.length) { S.fill(box, el("p", { class: "muted" }, "None.")); return; }
    S.fill(box, el("ul", { class: "events" }, alerts.map((a) =>
      el("li", { "data-alert": a.metric },
         el("span", { class: "badge state-unhealthy" }, a.state), " ",
         el("strong", {}, `${a.deployment}: ${a.metric}`),
         ` = ${S.num(a.value, 3)} (baseline ${S.num(a.baseline, 3)}), since ${ago(a.since_s)}. `,
         el("span", { class: "muted" }, a.reason)))));
  }

  function renderRollouts(rollouts) {
    const box = document.getElementById("rollouts");
    if (!rollouts.length) { S.fill(box, el("p", { class: "muted" }, "None.")); return; }
    S.fill(box, ...rollouts.map((r) => {
      const a = r.analysis;
      const checks = a && a.checks && a.checks.length ? el("table", { class: "data analysis" },
        el("caption", {}, "Analysis against the baseline, same window"),
        el("thead", {}, el("tr", {}, ["metric", "verdict", "candidate", "baseline", "p-value", "samples"].map((h, i) =>
          el("th", { scope: "col", class: i >= 2 ? "num" : null }, h)))),
        el("tbody", {}, a.checks.map((c) => el("tr", { "data-metric": c.metric },
          el("th", { scope: "row" }, c.metric), el("td", {}, c.verdict),
          el("td", { class: "num" }, S.num(c.candidate, 3)), el("td", { class: "num" }, S.num(c.baseline, 3)),
          el("td", { class: "num" }, S.num(c.p_value, 3)),
          el("td", { class: "num" }, `${S.num(c.n_candidate)} / ${S.num(c.n_baseline)}`))))) : null;
      return el("div", { class: "card", "data-rollout": r.deployment },
        el("h3", {}, `${r.deployment}: ${r.baseline} → ${(r.candidate && r.candidate.version) || "candidate"} (${r.strategy})`),
        el("p", {}, `Phase ${r.phase}, step ${r.step} of ${r.steps_percent.length}, the candidate takes ${S.num(r.candidate_percent)} % of traffic.`),
        el("p", {}, el("strong", {}, "Last decision: "), r.reason),
        a ? el("p", {}, el("strong", {}, `Analysis: ${a.verdict}. `), a.reason) : el("p", { class: "muted" }, "No analysis yet."),
        checks);
    }));
  }

  function paintKv(root) {
    for (const bar of root.querySelectorAll(".kvbar span[data-kv]")) {
      bar.style.width = Math.min(100, Math.max(0, Number(bar.dataset.kv) * 100)) + "%";
    }
  }

  function seriesChart(d, title, keys, yLabel, opts) {
    const pts = d.series;
    const box = el("figure", {}, el("figcaption", {}, title));
    if (pts.length < 2) { box.append(el("p", { class: "muted" }, "Collecting history…")); return box; }
    const series = keys.map((k) => ({ name: k.key, color: k.color, dash: k.dash,
                                      points: pts.map((p) => [p.t_s, p[k.key] === null ? null : p[k.key] * (k.scale || 1)]) }));
    box.append(S.lines(series, Object.assign({ title: title + " over the last " + S.num(-pts[0].t_s) + " s",
                                               xLabel: "seconds ago", yLabel, x1: 0,
                                               fx: (v) => S.num(-v + 0), fy: (v) => S.num(v, v % 1 ? 1 : 0) }, opts || {})),
               S.legend([...keys.map((k) => ({ color: k.color, label: k.label })),
                         ...(opts && opts.refY ? [{ color: "#b42318", label: "SLO (dashed line)" }] : [])]));
    return box;
  }

  function renderDeployment(node, d) {
    const w = d.window || {};
    const a = d.autoscaling;
    const slo = d.slo || {};
    const tiles = el("div", { class: "tiles" },
      tile("Queue depth", d.queue_depth, "queue_depth"),
      tile("In flight", d.in_flight),
      tile("Requests/s", S.num(w.requests_per_s, 2)),
      tile("TTFT P50 / P99", `${S.ms(w.ttft_p50_s)} / ${S.ms(w.ttft_p99_s)}`),
      tile("TPOT P50 / P99", `${S.ms(w.tpot_p50_s)} / ${S.ms(w.tpot_p99_s)}`),
      tile("SLO attainment", S.pct(w.goodput_ratio)),
      tile("Errors", S.pct(w.error_ratio)),
      tile("Replicas (desired)", a && a.desired !== null ? `${d.replicas.length} (${a.desired})` : d.replicas.length, "replicas"));
    const scaling = a ? el("p", {},
      el("strong", {}, a.fixed ? "Fixed size. " : `Autoscaling ${a.min_replicas}–${a.max_replicas}, target ${S.num(a.target_concurrency, 1)} in flight per replica. `),
      a.reason ? "Latest: " + a.reason : "No decision yet.",
      a.panic ? el("span", { class: "badge state-unhealthy" }, " panic mode") : null) : null;
    const charts = el("div", { class: "charts" },
      seriesChart(d, "TTFT (ms)", [
        { key: "ttft_p50_s", label: "P50", color: "#0b5cad", scale: 1000 },
        { key: "ttft_p99_s", label: "P99", color: "#b42318", scale: 1000 }], "ms",
        { refY: slo.ttft_p99_ms, refLabel: "TTFT SLO" }),
      seriesChart(d, "TPOT (ms)", [
        { key: "tpot_p50_s", label: "P50", color: "#0b5cad", scale: 1000 },
        { key: "tpot_p99_s", label: "P99", color: "#b42318", scale: 1000 }], "ms",
        { refY: slo.tpot_p99_ms, refLabel: "TPOT SLO" }),
      seriesChart(d, "SLO attainment and errors (%)", [
        { key: "goodput_ratio", label: "met every SLO", color: "#1a7f37", scale: 100 },
        { key: "error_ratio", label: "errors", color: "#b42318", scale: 100, dash: "5 4" }], "%", { y1: 100 }),
      seriesChart(d, "Requests per second", [
        { key: "requests_per_s", label: "req/s", color: "#8250df" }], "req/s"));
    const rows = d.replicas.map((r) => el("tr", { "data-replica": r.id, "data-state": r.state },
      el("th", { scope: "row" }, r.id),
      el("td", { class: "state" }, el("span", { class: "badge state-" + r.state }, r.state),
         r.ejected ? el("span", { class: "badge state-draining" }, " ejected") : null),
      el("td", { class: "num" }, duration(r.state_for_s)),
      el("td", {}, r.version), el("td", {}, r.backend), el("td", {}, r.pool), el("td", {}, r.region),
      el("td", { class: "num" }, el("span", { class: "kvbar", "aria-hidden": "true" }, el("span", { "data-kv": r.kv_usage })), S.pct(r.kv_usage, 0)),
      el("td", { class: "num" }, `${r.in_flight} / ${r.max_concurrency}`),
      el("td", { class: "num" }, r.queue_depth)));
    const table = el("table", { class: "data replicas" },
      el("caption", {}, `${d.replicas.length} replicas`),
      el("thead", {}, el("tr", {}, ["replica", "state", "for", "version", "backend", "pool", "region", "KV cache",
        "in flight", "queued"].map((h, i) => el("th", { scope: "col", class: i === 2 || i >= 7 ? "num" : null }, h)))),
      el("tbody", {}, rows));
    const decisions = a && a.decisions.length ? el("ul", { class: "events decisions" }, a.decisions.slice(0, 12).map((e) =>
      el("li", { "data-target": e.target },
         el("span", { class: "when" }, ago(e.at_unix_s)),
         el("strong", {}, `${e.current} → ${e.target}`), e.panic ? " (panic)" : "", ": ", e.reason,
         e.started.length ? el("span", { class: "muted" }, ` started ${e.started.join(", ")}`) : null,
         e.stopping.length ? el("span", { class: "muted" }, ` stopping ${e.stopping.join(", ")}`) : null,
         e.replaced.length ? el("span", { class: "muted" }, ` replaced ${e.replaced.join(", ")}`) : null)))
      : el("p", { class: "muted" }, "No scale decisions yet.");
    const colds = a && a.cold_starts.length ? el("ul", { class: "events cold-starts" }, a.cold_starts.slice(0, 8).map((c) =>
      el("li", {}, el("span", { class: "when" }, ago(c.at_unix_s)),
         el("strong", {}, `${c.replica_id}: ${S.num(c.total_s, 1)} s`), " — ",
         Object.entries(c.phases_s).map(([k, v]) => `${k} ${S.num(v, 2)} s`).join(" · "),
         c.weights_source ? el("span", { class: "muted" }, ` (weights from ${c.weights_source})`) : null)))
      : el("p", { class: "muted" }, "No cold starts recorded.");
    S.fill(node, 
      el("h2", { id: "dep-" + d.name }, `${d.name}`, el("span", { class: "muted" }, ` · ${d.model} · routing ${d.policy}`)),
      tiles, scaling, charts,
      el("h3", {}, "Replicas"), table,
      el("div", { class: "two" },
         el("div", {}, el("h3", {}, "Scale decisions"), decisions),
         el("div", {}, el("h3", {}, "Cold starts, in phases"), colds)));
  }

  document.addEventListener("DOMContentLoaded", () => {
    const btn = document.getElementById("pause");
    btn.addEventListener("click", () => {
      paused = !paused;
      btn.setAttribute("aria-pressed", String(paused));
      btn.textContent = paused ? "Resume updates" : "Pause updates";
      if (paused) setLive("paused", false); else poll();
    });
    poll();
  });
})();
