/* The /dashboard page: fetches /dashboard/data every few seconds and draws its charts as
   SVG. No libraries and nothing from another host. */
(() => {
  "use strict";

  const KEY_STORAGE = "tiffin-docs-api-key"; // the key typed into /docs works here too
  const SVG = "http://www.w3.org/2000/svg";
  const HEIGHT = 200;
  const MARGIN = { top: 10, right: 14, bottom: 22, left: 58 };
  const COLORS = ["#2f6fb5", "#c2571a", "#2d8a4e", "#8a3fb0", "#0f8a8a", "#a07a00", "#b8322c", "#5b6770"];
  const TOTAL = "#6b7075";
  const TIME_STEPS = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];

  const state = {
    data: null, // the points so far, column by column (see merge)
    range: 3600,
    api: "",
    interval: 5,
    alerts: [],
    batched: [],
    timer: null,
    polls: 0, // the latest poll's number: an answer to an older one is dropped
    charts: [],
  };

  // -- helpers -------------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "text") node.textContent = value;
      else node.setAttribute(key, String(value));
    }
    return node;
  }

  function apiKey() {
    return $("api-key").value.trim();
  }

  function headers() {
    const key = apiKey();
    return key ? { Authorization: "Bearer " + key } : {};
  }

  function significant(value) {
    return String(Number(value.toPrecision(3)));
  }

  function number(value) {
    if (value === null || value === undefined) return "–";
    const size = Math.abs(value);
    if (size >= 1e6) return significant(value / 1e6) + "M";
    if (size >= 1e4) return significant(value / 1e3) + "k";
    if (size >= 100) return String(Math.round(value));
    return significant(value);
  }

  function seconds(value) {
    if (value === null || value === undefined) return "–";
    if (value === 0) return "0";
    const size = Math.abs(value);
    if (size < 1e-3) return significant(value * 1e6) + " µs";
    if (size < 1) return significant(value * 1e3) + " ms";
    return significant(value) + " s";
  }

  function percent(value) {
    if (value === null || value === undefined) return "–";
    return significant(value * 100) + "%";
  }

  const pad = (n) => String(n).padStart(2, "0");

  function clock(unix, withSeconds) {
    const d = new Date(unix * 1000);
    const text = pad(d.getHours()) + ":" + pad(d.getMinutes());
    return withSeconds ? text + ":" + pad(d.getSeconds()) : text;
  }

  function span(secondsTotal) {
    if (secondsTotal % 3600 === 0) return secondsTotal / 3600 + " h";
    if (secondsTotal % 60 === 0) return secondsTotal / 60 + " min";
    return secondsTotal + " s";
  }

  function last(values) {
    for (let i = values.length - 1; i >= 0; i--) {
      if (values[i] !== null && values[i] !== undefined) return values[i];
    }
    return null;
  }

  // the index of the first of the sorted `values` at or after `x`
  function firstAtOrAfter(values, x) {
    let low = 0;
    let high = values.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      if (values[middle] < x) low = middle + 1;
      else high = middle;
    }
    return low;
  }

  // -- data ----------------------------------------------------------------------------

  // Add the points of one answer of /dashboard/data to the ones so far: columns that
  // appear later are filled with null before, columns that stop get null after.
  function merge(chunk) {
    if (state.data === null) {
      state.data = { t: [], total: {}, apis: {}, drift: {} };
    }
    const data = state.data;
    const before = data.t.length;
    const added = chunk.t.length;
    const gap = () => new Array(added).fill(null);
    const extend = (target, source) => {
      for (const field of chunk.fields) {
        if (!target[field]) target[field] = new Array(before).fill(null);
        target[field].push(...(source ? source[field] : gap()));
      }
    };
    extend(data.total, chunk.total);
    for (const name of new Set([...Object.keys(data.apis), ...Object.keys(chunk.apis)])) {
      if (!data.apis[name]) data.apis[name] = {};
      extend(data.apis[name], chunk.apis[name]);
    }
    const fresh = new Map(chunk.drift.map((d) => [d.monitor + "\u0000" + d.feature, d]));
    for (const key of new Set([...Object.keys(data.drift), ...fresh.keys()])) {
      const found = fresh.get(key);
      if (!data.drift[key]) {
        data.drift[key] = {
          monitor: found.monitor,
          feature: found.feature,
          values: new Array(before).fill(null),
        };
      }
      data.drift[key].values.push(...(found ? found.values : gap()));
    }
    data.t.push(...chunk.t);
    // keep the span the server keeps
    const drop = firstAtOrAfter(data.t, chunk.now - chunk.span);
    if (drop > 0) {
      data.t.splice(0, drop);
      const cut = (columns) => {
        for (const values of Object.values(columns)) values.splice(0, drop);
      };
      cut(data.total);
      for (const columns of Object.values(data.apis)) cut(columns);
      for (const series of Object.values(data.drift)) series.values.splice(0, drop);
    }
  }

  function columns() {
    const data = state.data;
    return (state.api ? data.apis[state.api] : data.total) || {};
  }

  // -- charts --------------------------------------------------------------------------

  function thresholds(kind) {
    return state.alerts
      .filter((rule) => rule.kind === kind)
      .filter((rule) => kind === "drift" || rule.api === null || rule.api === state.api)
      .map((rule) => ({ name: rule.name, value: rule.above }));
  }

  const CHARTS = [
    {
      id: "rate",
      title: "Requests per second",
      format: number,
      series() {
        if (state.api) return [{ name: state.api, values: columns().rate || [] }];
        const names = Object.keys(state.data.apis).sort();
        const list = names.map((name, i) => ({
          name,
          values: state.data.apis[name].rate,
          color: COLORS[i % COLORS.length],
        }));
        if (names.length > 1) list.unshift({ name: "all APIs", values: state.data.total.rate, color: TOTAL });
        return list;
      },
    },
    {
      id: "latency",
      title: "Latency",
      format: seconds,
      series() {
        const c = columns();
        return [
          { name: "p50", values: c.p50 || [], color: COLORS[2] },
          { name: "p90", values: c.p90 || [], color: COLORS[0] },
          { name: "p99", values: c.p99 || [], color: COLORS[1] },
        ];
      },
      thresholds: () => thresholds("p99_latency"),
    },
    {
      id: "errors",
      title: "Errors per second",
      format: number,
      series() {
        const c = columns();
        return [
          { name: "5xx", values: c.errors || [], color: "#b8322c" },
          { name: "4xx", values: c.client_errors || [], color: "#a07a00" },
        ];
      },
    },
    {
      id: "batch",
      title: "Batch size (rows per call)",
      format: number,
      series() {
        const batched = state.api ? state.batched.includes(state.api) : state.batched.length > 0;
        if (!batched) return [];
        const c = columns();
        return [
          { name: "mean", values: c.batch_mean || [], color: COLORS[0] },
          { name: "p50", values: c.batch_p50 || [], color: COLORS[2] },
          { name: "p99", values: c.batch_p99 || [], color: COLORS[1] },
        ];
      },
      empty: () =>
        state.api
          ? "API '" + state.api + "' does not batch its calls."
          : "No API of this service batches its calls.",
    },
    {
      id: "drift",
      title: "Drift score",
      format: number,
      series() {
        return Object.values(state.data.drift)
          .sort((a, b) => (a.monitor + a.feature < b.monitor + b.feature ? -1 : 1))
          .map((d, i) => ({
            name: d.monitor + " · " + d.feature,
            values: d.values,
            color: COLORS[i % COLORS.length],
          }));
      },
      thresholds: () => thresholds("drift"),
      empty: () => "No drift scores: data monitoring reports them once it has data to compare.",
    },
  ];

  function build() {
    const root = $("charts");
    root.textContent = "";
    state.charts = CHARTS.map((spec) => {
      const plot = el("div", { class: "plot" });
      const graphic = svg("svg", { role: "img", "aria-label": spec.title, height: HEIGHT });
      const empty = el("div", { class: "empty" });
      const tooltip = el("div", { class: "tooltip", hidden: "" });
      plot.append(graphic, empty, tooltip);
      const legend = el("div", { class: "legend" });
      const section = el("section", { class: "chart", id: "chart-" + spec.id }, el("h2", { text: spec.title }), legend, plot);
      root.append(section);
      const chart = { spec, section, plot, graphic, empty, tooltip, legend, view: null };
      graphic.addEventListener("mousemove", (event) => hover(chart, event));
      graphic.addEventListener("mouseleave", () => {
        chart.tooltip.hidden = true;
        const cursor = chart.graphic.querySelector(".cursor");
        if (cursor) cursor.remove();
      });
      return chart;
    });
  }

  function niceStep(raw) {
    const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 2.5, 5, 10]) {
      if (m * magnitude >= raw) return m * magnitude;
    }
    return 10 * magnitude;
  }

  function draw(chart) {
    const { spec, graphic } = chart;
    const t = state.data.t;
    const width = Math.max(280, Math.round(chart.plot.clientWidth || 600));
    const plotWidth = width - MARGIN.left - MARGIN.right;
    const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
    const end = t.length ? t[t.length - 1] : Date.now() / 1000;
    // a young server's points fill the width, rather than a corner of the hour
    let start = t.length ? Math.max(t[0], end - state.range) : end - state.range;
    start = Math.min(start, end - 2 * state.interval);
    const from = firstAtOrAfter(t, start);
    const series = spec.series();
    const lines = spec.thresholds ? spec.thresholds() : [];
    let top = 0;
    let shown = 0;
    for (const s of series) {
      let count = 0;
      for (let i = from; i < t.length; i++) {
        const v = s.values[i];
        if (v !== null && v !== undefined) {
          top = Math.max(top, v);
          count++;
        }
      }
      s.count = count;
      shown = Math.max(shown, count);
    }
    // an alert's threshold far above the data would flatten it: it is named, not drawn
    for (const line of lines) {
      line.above = top > 0 && line.value > 3 * top;
      if (!line.above) top = Math.max(top, line.value);
    }
    if (!(top > 0)) top = spec.format === seconds ? 0.001 : 1;
    const step = niceStep(top / 4);
    const max = Math.ceil(top / step - 1e-9) * step;
    const x = (time) => MARGIN.left + ((time - start) / (end - start)) * plotWidth;
    const y = (value) => MARGIN.top + plotHeight - (value / max) * plotHeight;
    chart.view = { start, end, from, series, x, width };

    graphic.textContent = "";
    graphic.setAttribute("viewBox", `0 0 ${width} ${HEIGHT}`);
    graphic.setAttribute("data-points", String(shown));
    graphic.setAttribute("data-series", String(series.filter((s) => s.count > 0).length));
    for (let value = 0; value <= max + step / 2; value += step) {
      const at = y(value);
      graphic.append(svg("line", { class: value === 0 ? "axis" : "grid", x1: MARGIN.left, x2: width - MARGIN.right, y1: at, y2: at }));
      graphic.append(svg("text", { x: MARGIN.left - 6, y: at + 4, "text-anchor": "end", text: spec.format(value) }));
    }
    const fits = Math.max(2, Math.floor(plotWidth / 80));
    const tick = TIME_STEPS.find((s) => (end - start) / s <= fits) || 3600;
    for (let time = Math.ceil(start / tick) * tick; time <= end; time += tick) {
      const at = x(time);
      graphic.append(svg("line", { class: "grid", x1: at, x2: at, y1: MARGIN.top, y2: MARGIN.top + plotHeight }));
      graphic.append(svg("text", { x: at, y: HEIGHT - 6, "text-anchor": "middle", text: clock(time, tick < 60) }));
    }
    let above = 0;
    for (const line of lines) {
      if (line.above) {
        const text = "alert " + line.name + " at " + spec.format(line.value) + " \u2191";
        graphic.append(svg("text", { class: "threshold-label", x: width - MARGIN.right, y: MARGIN.top + 10 + 13 * above++, "text-anchor": "end", text }));
        continue;
      }
      const at = y(line.value);
      graphic.append(svg("line", { class: "threshold", x1: MARGIN.left, x2: width - MARGIN.right, y1: at, y2: at }));
      graphic.append(svg("text", { class: "threshold-label", x: width - MARGIN.right, y: at - 4, "text-anchor": "end", text: "alert " + line.name }));
    }
    series.forEach((s, index) => {
      s.color = s.color || COLORS[index % COLORS.length];
      let d = "";
      let pen = false;
      for (let i = from; i < t.length; i++) {
        const v = s.values[i];
        if (v === null || v === undefined) {
          pen = false;
          continue;
        }
        d += (pen ? "L" : "M") + x(t[i]).toFixed(1) + " " + y(v).toFixed(1);
        // a lone point still shows, as a dot
        const next = s.values[i + 1];
        if (!pen && (next === null || next === undefined)) d += "h0.01";
        pen = true;
      }
      if (d) graphic.append(svg("path", { class: "line", d, stroke: s.color, "data-name": s.name }));
    });

    chart.legend.textContent = "";
    for (const s of series) {
      chart.legend.append(
        el(
          "span",
          { class: "item" },
          el("span", { class: "swatch", "data-color": s.color }),
          s.name,
          el("span", { class: "latest", text: spec.format(last(s.values)) }),
        ),
      );
    }
    for (const swatch of chart.legend.querySelectorAll(".swatch")) {
      swatch.style.background = swatch.getAttribute("data-color");
    }
    const emptyText = !series.length && spec.empty ? spec.empty() : shown === 0 ? waiting() : "";
    chart.empty.textContent = emptyText;
    chart.empty.hidden = !emptyText;
  }

  function waiting() {
    return "No requests in this time yet.";
  }

  function hover(chart, event) {
    const view = chart.view;
    const t = state.data ? state.data.t : [];
    if (!view || view.from >= t.length) return;
    const box = chart.graphic.getBoundingClientRect();
    const px = ((event.clientX - box.left) / box.width) * view.width;
    const time = view.start + ((px - MARGIN.left) / (view.width - MARGIN.left - MARGIN.right)) * (view.end - view.start);
    let index = Math.min(Math.max(firstAtOrAfter(t, time), view.from), t.length - 1);
    if (index > view.from && Math.abs(t[index - 1] - time) < Math.abs(t[index] - time)) index--;
    const at = view.x(t[index]);
    let cursor = chart.graphic.querySelector(".cursor");
    if (!cursor) {
      cursor = svg("line", { class: "cursor" });
      chart.graphic.append(cursor);
    }
    for (const [key, value] of Object.entries({ x1: at, x2: at, y1: MARGIN.top, y2: HEIGHT - MARGIN.bottom })) {
      cursor.setAttribute(key, value);
    }
    const tip = chart.tooltip;
    tip.textContent = "";
    tip.append(el("div", { class: "time", text: clock(t[index], true) }));
    for (const s of view.series) {
      tip.append(el("div", { class: "row", text: s.name + "  " + chart.spec.format(s.values[index] ?? null) }));
    }
    tip.hidden = false;
    const left = (at / view.width) * box.width;
    tip.style.left = (left > box.width / 2 ? left - tip.offsetWidth - 10 : left + 10) + "px";
  }

  // -- the rest of the page ------------------------------------------------------------

  function tile(label, value, note) {
    return el("div", { class: "tile" }, el("div", { class: "label", text: label }), el("div", { class: "value", text: value }), el("div", { class: "note", text: note }));
  }

  function renderTiles() {
    const c = columns();
    const rate = last(c.rate || []);
    const errors = last(c.errors || []);
    const step = span(Math.round(state.interval));
    const share = rate ? (errors || 0) / rate : null;
    $("tiles").replaceChildren(
      tile("Requests / s", number(rate), "over the last " + step),
      tile("Latency p99", seconds(last(c.p99 || [])), "p50 " + seconds(last(c.p50 || [])) + " · p90 " + seconds(last(c.p90 || []))),
      tile("Errors", percent(share), "5xx " + number(errors) + "/s · 4xx " + number(last(c.client_errors || [])) + "/s"),
      tile("In flight", number(last(c.in_flight || [])), state.api ? "requests to " + state.api : "requests, all APIs"),
    );
  }

  const MEASURES = {
    error_rate: ["error rate", percent],
    p99_latency: ["p99 latency", seconds],
    drift: ["drift", number],
  };

  function renderAlerts() {
    const box = $("alerts");
    box.hidden = state.alerts.length === 0;
    box.replaceChildren(
      ...state.alerts.map((rule) => {
        const [what, format] = MEASURES[rule.kind] || [rule.kind, number];
        const scope = rule.api || [rule.monitor, rule.feature].filter(Boolean).join(" · ");
        const text = what + (scope ? " of " + scope : "") + " > " + format(rule.above) + " over " + span(rule.window);
        return el(
          "div",
          { class: "alert " + rule.state, id: "alert-" + rule.name },
          el("span", { class: "state", text: rule.state }),
          el("strong", { text: rule.name }),
          el("span", { class: "rule", text: text }),
          el("span", { class: "now", text: "now " + format(rule.value) }),
        );
      }),
    );
  }

  function renderApis() {
    const select = $("api");
    const known = new Set([...select.options].map((o) => o.value));
    for (const name of Object.keys(state.data.apis).sort()) {
      if (!known.has(name)) select.append(el("option", { value: name, text: name }));
    }
  }

  function render() {
    if (state.data === null) return;
    renderApis();
    renderTiles();
    renderAlerts();
    for (const chart of state.charts) draw(chart);
  }

  function setStatus(kind, text) {
    const status = $("status");
    status.className = "status " + kind;
    status.textContent = text;
  }

  function problem(text) {
    const box = $("problem");
    box.hidden = !text;
    box.textContent = text || "";
  }

  async function poll() {
    clearTimeout(state.timer);
    const ticket = ++state.polls;
    const t = state.data ? state.data.t : [];
    const since = t.length ? "?since=" + t[t.length - 1] : "";
    try {
      const response = await fetch("/dashboard/data" + since, { headers: headers(), cache: "no-store" });
      if (ticket !== state.polls) return; // a newer poll (the key changed) has taken over
      if (response.status === 401) {
        setStatus("failed", "needs an API key");
        problem("This server needs an API key to show its metrics. Enter it above.");
      } else if (!response.ok) {
        const body = await response.json().catch(() => null);
        const message = body && body.error ? body.error.message : response.statusText;
        setStatus("failed", "error " + response.status);
        problem("The server answered " + response.status + ": " + message);
      } else {
        const chunk = await response.json();
        if (ticket !== state.polls) return;
        state.interval = chunk.interval;
        state.alerts = chunk.alerts;
        state.batched = chunk.batched;
        merge(chunk);
        render();
        problem(null);
        setStatus("live", "live · " + clock(chunk.now, true) + " · every " + span(Math.round(chunk.interval)));
      }
    } catch (error) {
      if (ticket !== state.polls) return;
      setStatus("failed", "cannot reach the server");
    }
    state.timer = setTimeout(poll, Math.max(1000, state.interval * 1000));
  }

  function start() {
    build();
    const key = $("api-key");
    key.value = sessionStorage.getItem(KEY_STORAGE) || "";
    key.addEventListener("change", () => {
      sessionStorage.setItem(KEY_STORAGE, apiKey());
      state.data = null;
      poll();
    });
    $("api").addEventListener("change", (event) => {
      state.api = event.target.value;
      render();
    });
    for (const button of document.querySelectorAll(".range button")) {
      button.addEventListener("click", () => {
        state.range = Number(button.getAttribute("data-range"));
        for (const other of document.querySelectorAll(".range button")) {
          other.setAttribute("aria-pressed", String(other === button));
        }
        render();
      });
    }
    let resizing = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizing);
      resizing = setTimeout(render, 100);
    });
    poll();
  }

  start();
})();
