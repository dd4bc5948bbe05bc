// shipit console: helpers every page shares (DOM building, the JSON API, number formats,
// the URL as the form's state, and three small SVG charts). No dependencies, no build step.
"use strict";

window.shipit = (function () {
  const KEY_STORE = "shipit-console-key";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const GIB = 1024 ** 3;

  // el("td", {class: "num"}, "1.2") -> <td class="num">1.2</td>; children are nodes or text.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  // node.replaceChildren without the nulls that optional parts leave.
  function fill(node, ...children) {
    node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  }

  function setAttrs(node, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      node.setAttribute(k, v === true ? "" : String(v));
    }
  }

  // ----- the API -----------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(message, status, field) {
      super(message);
      this.status = status;
      this.field = field;
    }
  }

  function apiKey() {
    try { return sessionStorage.getItem(KEY_STORE) || ""; } catch (e) { return ""; }
  }

  async function api(path, options) {
    const opts = Object.assign({ headers: {} }, options || {});
    const key = apiKey();
    if (key) opts.headers["authorization"] = "Bearer " + key;
    if (opts.json !== undefined) {
      opts.method = opts.method || "POST";
      opts.headers["content-type"] = "application/json";
      opts.body = JSON.stringify(opts.json);
      delete opts.json;
    }
    let resp;
    try {
      resp = await fetch(path, opts);
    } catch (e) {
      throw new ApiError("cannot reach the server (" + e.message + "); is it still running?", 0);
    }
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (!resp.ok) {
      const err = data && data.error ? data.error : {};
      if (resp.status === 401 || resp.status === 403) showKeyField();
      throw new ApiError(err.message || "HTTP " + resp.status, resp.status, err.param);
    }
    return data;
  }

  // With API keys on, the planner needs a key and the fleet an admin key: ask for one, keep it
  // for this tab only (sessionStorage), never in the URL.
  function showKeyField() {
    const host = document.querySelector("header.top .key");
    if (!host || host.childElementCount) return;
    const input = el("input", { type: "password", id: "api-key", autocomplete: "off",
                                placeholder: "sk-shipit-..." });
    const save = el("button", { type: "button", class: "secondary" }, "Use key");
    save.addEventListener("click", () => {
      try { sessionStorage.setItem(KEY_STORE, input.value.trim()); } catch (e) { /* private mode */ }
      location.reload();
    });
    host.append(el("label", { for: "api-key" }, "API key "), input, " ", save);
  }

  // ----- formats -----------------------------------------------------------------------------
  function gib(bytes) { return (bytes / GIB).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 }) + " GiB"; }
  function num(x, digits) {
    if (x === null || x === undefined || Number.isNaN(x)) return "–";
    const d = digits === undefined ? 0 : digits;
    return Number(x).toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d });
  }
  function ms(seconds) { return seconds === null || seconds === undefined ? "–" : num(seconds * 1000, seconds < 0.1 ? 1 : 0) + " ms"; }
  function pct(ratio, digits) { return ratio === null || ratio === undefined ? "–" : num(ratio * 100, digits === undefined ? 1 : digits) + " %"; }
  function usd(x, digits) { return "$" + num(x, digits === undefined ? 2 : digits); }

  // ----- the URL holds the inputs, so a link shares them ------------------------------------
  function formToParams(form, skip) {
    const params = new URLSearchParams();
    for (const field of form.elements) {
      if (!field.name || (skip && skip.includes(field.name)) || field.disabled) continue;
      if ((field.type === "checkbox" || field.type === "radio") && !field.checked) continue;
      if (field.value === "") continue;
      params.append(field.name, field.value);
    }
    return params;
  }

  function paramsToForm(form, params) {
    for (const field of form.elements) {
      if (!field.name || !params.has(field.name)) continue;
      const values = params.getAll(field.name);
      if (field.type === "checkbox" || field.type === "radio") {
        field.checked = values.includes(field.value);
      } else {
        if (field.tagName === "SELECT" && ![...field.options].some((o) => o.value === values[0])) {
          field.append(el("option", { value: values[0] }, values[0]));  // an alias from a link
        }
        field.value = values[0];
      }
    }
  }

  function fillSelect(select, items, label, selected) {
    select.replaceChildren(...items.map((it) => {
      const opt = el("option", { value: it.id }, label(it));
      if (it.id === selected) opt.selected = true;
      return opt;
    }));
  }

  // ----- charts ------------------------------------------------------------------------------
  // A horizontal stacked bar: segments [{name, label, value, color}], scaled to their sum.
  function stackedBar(segments, opts) {
    const o = Object.assign({ width: 760, height: 64, title: "" }, opts || {});
    const total = segments.reduce((s, x) => s + Math.max(x.value, 0), 0) || 1;
    const pad = 8, barH = o.height - 2 * pad;
    const root = svg("svg", { class: "chart", viewBox: `0 0 ${o.width} ${o.height}`, role: "img",
                              "aria-label": o.title, preserveAspectRatio: "none" },
                     svg("title", {}, o.title));
    let x = pad;
    const usable = o.width - 2 * pad;
    for (const s of segments) {
      const w = (Math.max(s.value, 0) / total) * usable;
      if (w <= 0) continue;
      root.append(svg("rect", { x: x.toFixed(2), y: pad, width: w.toFixed(2), height: barH,
                                fill: s.color, "data-segment": s.name },
                      svg("title", {}, `${s.label}: ${gib(s.value)}`)));
      if (w > 70) {
        root.append(svg("text", { x: (x + w / 2).toFixed(2), y: pad + barH / 2 + 5, "text-anchor": "middle",
                                  "font-size": 14, fill: s.textColor || "#fff", "font-weight": 600 },
                        s.label));
      }
      x += w;
    }
    return root;
  }

  // A round step for about `parts` intervals over `range` (1, 2 or 5 times a power of ten).
  function niceStep(range, parts) {
    const raw = range > 0 ? range / parts : 1;
    const p = 10 ** Math.floor(Math.log10(raw));
    for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
    return 10 * p;
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const step = niceStep(v, 4);
    return Math.ceil(v / step - 1e-9) * step;
  }

  // Axes for an x/y chart: returns {root, sx, sy}; ticks on round numbers, labels in words.
  function frame(o) {
    const m = { left: 64, right: 34, top: 14, bottom: 44 };
    const W = o.width, H = o.height, pw = W - m.left - m.right, ph = H - m.top - m.bottom;
    const root = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": o.title },
                     svg("title", {}, o.title));
    const sx = (v) => m.left + ((v - o.x0) / (o.x1 - o.x0 || 1)) * pw;
    const sy = (v) => m.top + ph - ((v - o.y0) / (o.y1 - o.y0 || 1)) * ph;
    const ticks = (lo, hi) => {
      const step = niceStep(hi - lo, 4), out = [];
      for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-6; v += step) out.push(v + 0);
      return out;
    };
    for (const yv of ticks(o.y0, o.y1)) {
      const y = sy(yv);
      root.append(svg("line", { class: "grid", x1: m.left, x2: W - m.right, y1: y, y2: y }));
      root.append(svg("text", { x: m.left - 6, y: y + 4, "text-anchor": "end", "font-size": 12 }, o.fy(yv)));
    }
    for (const xv of ticks(o.x0, o.x1)) {
      root.append(svg("text", { x: sx(xv), y: H - m.bottom + 16, "text-anchor": "middle", "font-size": 12 }, o.fx(xv)));
    }
    root.append(svg("line", { class: "axis", x1: m.left, x2: m.left, y1: m.top, y2: m.top + ph }));
    root.append(svg("line", { class: "axis", x1: m.left, x2: W - m.right, y1: m.top + ph, y2: m.top + ph }));
    root.append(svg("text", { x: m.left + pw / 2, y: H - 6, "text-anchor": "middle", "font-size": 12.5 }, o.xLabel));
    root.append(svg("text", { x: 14, y: m.top + ph / 2, "text-anchor": "middle", "font-size": 12.5,
                              transform: `rotate(-90 14 ${m.top + ph / 2})` }, o.yLabel));
    return { root, sx, sy };
  }

  // Points [{x, y, label, color, title}], e.g. cost against latency.
  function scatter(points, opts) {
    const o = Object.assign({ width: 760, height: 320 }, opts);
    const xs = points.map((p) => p.x), ys = points.map((p) => p.y);
    const f = frame(Object.assign({}, o, { x0: 0, x1: niceMax(Math.max(...xs, 0) * 1.05),
                                           y0: 0, y1: niceMax(Math.max(...ys, 0) * 1.1) }));
    for (const p of points) {
      const g = svg("g", { "data-label": p.label },
                    svg("circle", { cx: f.sx(p.x), cy: f.sy(p.y), r: p.big ? 7 : 5, fill: p.color,
                                    stroke: "#fff", "stroke-width": 1.5 }),
                    svg("title", {}, p.title));
      if (p.label) g.append(svg("text", { x: f.sx(p.x) + 8, y: f.sy(p.y) - 6, "font-size": 11.5 }, p.label));
      f.root.append(g);
    }
    return f.root;
  }

  // Lines [{name, color, points: [[x, y|null], ...], dash}] over a shared x axis.
  function lines(series, opts) {
    const o = Object.assign({ width: 560, height: 220, y0: 0 }, opts);
    const xs = series.flatMap((s) => s.points.map((p) => p[0]));
    const ys = series.flatMap((s) => s.points.map((p) => p[1]).filter((v) => v !== null));
    const x0 = o.x0 !== undefined ? o.x0 : Math.min(...xs, 0), x1 = o.x1 !== undefined ? o.x1 : Math.max(...xs, 0);
    const y1 = o.y1 !== undefined ? o.y1 : niceMax(Math.max(...ys, 0) * 1.1);
    const f = frame(Object.assign({}, o, { x0, x1: x1 === x0 ? x0 + 1 : x1, y0: o.y0, y1 }));
    for (const s of series) {
      let d = "", pen = false;
      for (const [x, y] of s.points) {
        if (y === null || y === undefined) { pen = false; continue; }
        d += (pen ? " L" : " M") + f.sx(x).toFixed(1) + " " + f.sy(y).toFixed(1);
        pen = true;
      }
      if (d) f.root.append(svg("path", { d, fill: "none", stroke: s.color, "stroke-width": 2,
                                         "stroke-dasharray": s.dash || null, "data-series": s.name }));
    }
    if (o.refY !== undefined && o.refY !== null) {
      const y = f.sy(o.refY);
      f.root.append(svg("line", { x1: f.sx(x0), x2: f.sx(x1), y1: y, y2: y, stroke: "#b42318",
                                  "stroke-dasharray": "6 4", "stroke-width": 1.5 },
                        svg("title", {}, o.refLabel || "")));
    }
    return f.root;
  }

  function legend(items) {
    return el("ul", { class: "legend" }, items.map((it) =>
      el("li", {}, el("span", { class: "swatch", "data-color": it.color }), it.label)));
  }

  // Swatches take their colour from data-color (inline styles are off under the page's CSP).
  function paintSwatches(root) {
    for (const s of (root || document).querySelectorAll(".swatch[data-color]")) {
      s.style.background = s.dataset.color;
    }
  }

  function navCurrent() {
    const here = location.pathname.replace(/\/$/, "").split("/").pop();
    for (const a of document.querySelectorAll("header.top nav a")) {
      if (a.getAttribute("href") === here || (here === "ui" && a.getAttribute("href") === "./")) {
        a.setAttribute("aria-current", "page");
      }
    }
  }

  document.addEventListener("DOMContentLoaded", navCurrent);

  return { el, svg, fill, api, ApiError, gib, num, ms, pct, usd, formToParams, paramsToForm, fillSelect,
           stackedBar, scatter, lines, legend, paintSwatches, GIB };
})();
