// Hardware recommender: the form <-> the URL, /ui/api/recommend, the ranked table and a
// cost-against-latency chart.
"use strict";

(function () {
  const S = window.shipit;
  const { el } = S;
  const form = document.getElementById("rec-form");
  const result = document.getElementById("result");
  const LIST_FIELDS = ["dtypes", "providers"];
  let seq = 0;
  let last = null;

  async function start() {
    let cat;
    try {
      cat = await S.api("api/catalog");
    } catch (e) {
      showError(e);
      return;
    }
    S.fillSelect(form.model, cat.models,
                 (m) => `${m.id} (${m.params_b} B, ${S.num(m.max_context)} ctx)`, "llama-3.1-8b");
    const box = (group, value, checked) => {
      const id = `${group}-${value}`;
      return el("label", { for: id },
                el("input", { type: "checkbox", id, name: group, value, checked }), " " + value);
    };
    document.getElementById("dtypes").append(...cat.dtypes.map((d) => box("dtypes", d, cat.default_dtypes.includes(d))));
    document.getElementById("providers").append(...cat.providers.map((p) => box("providers", p, false)));
    const params = new URLSearchParams(location.search);
    S.paramsToForm(form, params);
    form.addEventListener("submit", (ev) => { ev.preventDefault(); rank(); });
    if (params.has("rate") || params.has("model")) rank();
  }

  // The page's own fields (rate_kind + rate, repeated checkboxes) in the API's words.
  function apiParams(params) {
    const out = new URLSearchParams();
    for (const [k, v] of params.entries()) {
      if (k === "rate_kind" || k === "rate" || LIST_FIELDS.includes(k)) continue;
      out.set(k, v);
    }
    if (params.get("rate")) out.set(params.get("rate_kind") || "rps", params.get("rate"));
    for (const k of LIST_FIELDS) {
      const values = params.getAll(k);
      if (values.length) out.set(k, values.join(","));
    }
    return out;
  }

  async function rank() {
    const params = S.formToParams(form, ["hf_config"]);
    history.replaceState(null, "", "?" + params.toString());
    if (!params.getAll("dtypes").length) {
      showError(new S.ApiError("tick at least one precision (bf16 is the reference)", 400, "dtypes"));
      return;
    }
    const query = apiParams(params);
    const pasted = form.hf_config.value.trim();
    const mine = ++seq;
    result.setAttribute("aria-busy", "true");
    S.fill(result, el("h2", { id: "result-h" }, "Ranking…"));
    try {
      let data;
      if (pasted) {
        const body = {};
        for (const [k, v] of query.entries()) {
          if (k === "model") continue;
          body[k] = LIST_FIELDS.includes(k) ? v.split(",").filter(Boolean) : v;
        }
        body.hf_config = pasted;
        data = await S.api("api/recommend", { json: body });
      } else {
        data = await S.api("api/recommend?" + query.toString());
      }
      if (mine === seq) { last = data; render(data); }
    } catch (e) {
      if (mine === seq) showError(e);
    } finally {
      if (mine === seq) result.removeAttribute("aria-busy");
    }
  }

  function showError(e) {
    const field = e.field ? ` (field: ${e.field})` : "";
    S.fill(result, el("h2", { id: "result-h", class: "visually-hidden" }, "Result"),
                           el("div", { class: "error", role: "alert" }, e.message + field));
  }

  const ttft = (r) => r.plan.ttft_tail_ms + r.plan.queue_wait_tail_ms;

  function chart(rows, axis) {
    const points = rows.map((r, i) => ({
      x: r.usd_per_million_tokens,
      y: axis === "ttft" ? ttft(r) : r.plan.tpot_tail_ms,
      label: i < 5 ? "#" + (i + 1) : "",
      big: i === 0,
      color: r.calibrated ? "#0b5cad" : "#bc4c00",
      title: `#${i + 1} ${r.gpu_id} TP${r.tp} ${r.dtype} at ${r.provider}: ${S.usd(r.usd_per_million_tokens, 3)}/M tokens, ` +
             `TTFT ${S.num(ttft(r))} ms, TPOT ${S.num(r.plan.tpot_tail_ms, 1)} ms`,
    }));
    const yLabel = axis === "ttft" ? "TTFT P99 incl. queueing (ms)" : "TPOT P99 (ms)";
    return S.scatter(points, { title: `Cost against latency of the ${rows.length} options shown: ` +
                                      "$ per million tokens across, " + yLabel + " up",
                               xLabel: "$ per million tokens (lower is cheaper)", yLabel,
                               fx: (v) => "$" + S.num(v, 3), fy: (v) => S.num(v) });
  }

  function render(data) {
    const q = data.query;
    const rows = data.rows;
    const head = el("h2", { id: "result-h" },
      `${data.model.id}: ${S.num(q.mean_rps, 2)} req/s, ${q.input_len}/${q.output_len} tokens, ` +
      `P99 TTFT ${S.num(q.ttft_p99_ms)} ms, TPOT ${S.num(q.tpot_p99_ms)} ms`);
    const summary = el("p", { id: "summary" },
      `${data.count} options meet the SLO, ${data.rejected.length} rejected; the ${rows.length} cheapest shown.`);
    if (!rows.length) {
      S.fill(result, head, summary,
        el("div", { class: "error", role: "alert" }, "No configuration meets the SLO within the budget: loosen the SLO, allow more GPUs or more $/hour."),
        rejectedList(data.rejected));
      return;
    }
    const best = rows[0];
    const bestLine = el("p", { class: "verdict fits" },
      `Cheapest: ${best.gpus} × ${best.gpu_id} (TP${best.tp}, ${best.dtype}) at ${best.provider}, ` +
      `${S.usd(best.usd_per_million_tokens, 3)} per million tokens, ${S.usd(best.usd_per_hour)}/hour.` +
      (best.calibrated ? "" : " Uncalibrated GPU: benchmark it before buying."));
    const axisSel = el("select", { id: "axis", class: "inline" },
      el("option", { value: "tpot" }, "TPOT P99"), el("option", { value: "ttft" }, "TTFT P99"));
    const holder = el("div", { id: "chart" }, chart(rows, "tpot"));
    axisSel.addEventListener("change", () => S.fill(holder, chart(rows, axisSel.value)));
    const key = S.legend([{ color: "#0b5cad", label: "calibrated GPU" },
                          { color: "#bc4c00", label: "uncalibrated (datasheet roofline)" }]);
    const table = el("table", { class: "data", id: "ranking" },
      el("caption", {}, "Ranked by $ per million tokens (input + output), then by GPUs; each with its reasoning below it"),
      el("thead", {}, el("tr", {}, ["#", "GPU", "TP", "dtype", "provider", "GPUs", "replicas", "$/hour",
        "$/M tokens", "headroom", "TTFT P99", "TPOT P99"].map((h, i) =>
          el("th", { scope: "col", class: i >= 5 && i <= 11 ? "num" : null }, h)))),
      el("tbody", {}, rows.flatMap((r, i) => [el("tr", {
          class: i === 0 ? "best" : null, "data-rank": i + 1, "data-gpu": r.gpu_id, "data-tp": r.tp,
          "data-dtype": r.dtype, "data-provider": r.provider, "data-usd-per-mtok": JSON.stringify(r.usd_per_million_tokens) },
        el("td", { class: "num", rowspan: 2 }, i + 1),
        el("td", { class: "nowrap" }, r.gpu_id, r.calibrated ? null : el("span", { class: "uncal", title: "uncalibrated: datasheet roofline only" }, " *")),
        el("td", { class: "num" }, r.tp), el("td", { class: "nowrap" }, r.dtype), el("td", {}, r.provider),
        el("td", { class: "num" }, r.gpus), el("td", { class: "num" }, r.replicas),
        el("td", { class: "num" }, S.usd(r.usd_per_hour)),
        el("td", { class: "num" }, S.usd(r.usd_per_million_tokens, 3)),
        el("td", { class: "num", title: "share of the replicas' slots free at peak" }, S.pct(1 - r.plan.utilization_at_peak, 0)),
        el("td", { class: "num" }, S.num(ttft(r)) + " ms"),
        el("td", { class: "num" }, S.num(r.plan.tpot_tail_ms, 1) + " ms")),
      el("tr", { class: "why-row" + (i === 0 ? " best" : "") },
        el("td", { class: "why", colspan: 11 }, el("span", { class: "visually-hidden" }, "Why: "), r.reason))])));
    S.fill(result, head, summary, bestLine,
      el("h3", {}, "Cost against latency"),
      el("label", { for: "axis" }, "Latency axis "), axisSel, holder, key,
      el("h3", {}, "Ranking"), el("div", { class: "scroll" }, table),
      el("p", { class: "muted" }, "* uncalibrated: no published run checks the planner on this GPU; its figures are the datasheet roofline, usually optimistic. Headroom: the share of slots free at the peak rate."),
      rejectedList(data.rejected));
    S.paintSwatches(result);
    result.dataset.ready = "true";
  }

  function rejectedList(rejected) {
    if (!rejected.length) return null;
    return el("details", {}, el("summary", {}, `Why ${rejected.length} configurations were rejected`),
              el("ul", {}, rejected.slice(0, 200).map((r) => el("li", {}, r))));
  }

  document.addEventListener("DOMContentLoaded", start);
})();
