// VRAM calculator: the form <-> the URL, /ui/api/vram, the figures and the stacked bar.
"use strict";

(function () {
  const S = window.shipit;
  const { el } = S;
  const form = document.getElementById("vram-form");
  const result = document.getElementById("result");
  const COLORS = { weights: "#0b5cad", activations: "#8250df", overhead: "#6e7781",
                   kv_cache: "#1a7f37", free: "#d8dee4" };
  const LABELS = { weights: "Weights", activations: "Activations", overhead: "Overhead",
                   kv_cache: "KV cache", free: "Free" };
  let seq = 0;
  let timer = null;

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
    S.fillSelect(form.gpu, cat.gpus, (g) => `${g.name} (${g.memory_gib} GiB)`, "h100-sxm");
    for (const d of cat.dtypes) form.dtype.append(el("option", { value: d }, d));
    S.fillSelect(form.kv_dtype, cat.kv_dtypes.map((k) => ({ id: k })), (k) => k.id, "auto");
    S.paramsToForm(form, new URLSearchParams(location.search));
    form.addEventListener("submit", (ev) => { ev.preventDefault(); calculate(); });
    form.addEventListener("change", () => { clearTimeout(timer); timer = setTimeout(calculate, 200); });
    calculate();
  }

  async function calculate() {
    const params = S.formToParams(form, ["hf_config"]);
    history.replaceState(null, "", "?" + params.toString());
    const pasted = form.hf_config.value.trim();
    const mine = ++seq;
    result.setAttribute("aria-busy", "true");
    try {
      let data;
      if (pasted) {
        const body = Object.fromEntries(params.entries());
        delete body.model;
        body.hf_config = pasted;
        data = await S.api("api/vram", { json: body });
      } else {
        data = await S.api("api/vram?" + params.toString());
      }
      if (mine === seq) render(data);
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

  function figure(label, value, field, raw, color) {
    return el("div", { class: "figure", "data-field": field, "data-raw": JSON.stringify(raw) },
              el("div", { class: "label" }, color ? el("span", { class: "swatch", "data-color": color }) : null, label),
              el("div", { class: "value" }, value));
  }

  function render(data) {
    const p = data.plan;
    const seg = Object.fromEntries(data.segments.map((s) => [s.name, s.bytes]));
    const verdict = el("p", { class: "verdict " + (p.fits ? "fits" : "nofit"), id: "verdict" },
                       p.reason.charAt(0).toUpperCase() + p.reason.slice(1));
    const figures = el("div", { class: "figures" },
      figure("Weights (per GPU)", S.gib(p.weight_bytes), "weight_bytes", p.weight_bytes, COLORS.weights),
      figure("KV cache pool", S.gib(p.kv_pool_bytes), "kv_pool_bytes", p.kv_pool_bytes, COLORS.kv_cache),
      figure("Activations (peak)", S.gib(p.activation_peak_bytes), "activation_peak_bytes", p.activation_peak_bytes, COLORS.activations),
      figure("Overhead (CUDA, NCCL, graphs)", S.gib(seg.overhead), "overhead", seg.overhead, COLORS.overhead),
      figure("Free (outside the budget)", S.gib(seg.free), "free", seg.free, COLORS.free),
      figure(`Max concurrency at ${S.num(p.context_tokens)} tokens`, S.num(p.max_concurrent_seqs) + (p.max_concurrent_seqs === 1 ? " sequence" : " sequences"),
             "max_concurrent_seqs", p.max_concurrent_seqs),
      figure("KV pool", S.num(p.kv_pool_tokens) + " tokens", "kv_pool_tokens", p.kv_pool_tokens),
      figure("KV per token (per GPU)", S.num(p.kv_bytes_per_token) + " B", "kv_bytes_per_token", p.kv_bytes_per_token));
    const segments = data.segments.map((s) => ({ name: s.name, label: LABELS[s.name], value: s.bytes,
                                                  color: COLORS[s.name], textColor: s.name === "free" ? "#1b1f24" : "#fff" }));
    const bar = S.stackedBar(segments, { title: `Memory of one ${p.gpu_id} (${S.gib(p.gpu_total_bytes)}): ` +
      segments.map((s) => `${s.label} ${S.gib(s.value)}`).join(", ") });
    const legend = S.legend(segments.map((s) => ({ color: s.color, label: `${s.label} ${S.gib(s.value)}` })));
    const suggestions = p.suggestions.length
      ? el("div", {}, el("h3", {}, "What would make it fit"),
           el("ul", { id: "suggestions" }, p.suggestions.map((s) => el("li", {}, s))))
      : null;
    const rows = Object.entries(p).filter(([, v]) => typeof v !== "object").map(([k, v]) =>
      el("tr", { "data-field": k, "data-raw": JSON.stringify(v) },
         el("th", { scope: "row" }, k), el("td", { class: "num" }, typeof v === "number" ? S.num(v, 3) : String(v))));
    const all = el("details", {},
      el("summary", {}, "Every figure, as shipit plan vram --output json prints it"),
      el("table", { class: "data", id: "plan-fields" },
         el("caption", {}, data.label),
         el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "field"), el("th", { scope: "col", class: "num" }, "value"))),
         el("tbody", {}, rows)));
    S.fill(result, 
      el("h2", { id: "result-h" }, data.label),
      verdict, figures,
      el("h3", {}, `One GPU's ${S.gib(p.gpu_total_bytes)}, budget ${S.gib(p.budget_bytes)}`),
      bar, legend, suggestions, all);
    S.paintSwatches(result);
    result.dataset.ready = "true";
  }

  document.addEventListener("DOMContentLoaded", start);
})();
