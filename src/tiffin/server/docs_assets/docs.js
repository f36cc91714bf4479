// The /docs page of a tiffin service: reads /openapi.json, describes each API, and
// sends requests to it. Plain JavaScript, no dependencies, nothing loaded from elsewhere.
(function () {
  "use strict";

  const KEY_STORAGE = "tiffin-docs-api-key";
  const REF_PREFIX = "#/components/schemas/";
  let doc = null;

  // -- small helpers -------------------------------------------------------------------

  // el("p", {class: "x"}, "text", child) -> an element; attributes starting "on" are listeners.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function apiKey() {
    return document.getElementById("api-key").value.trim();
  }

  function authHeaders() {
    const key = apiKey();
    return key ? { Authorization: "Bearer " + key } : {};
  }

  // JSON on one line: {"a": [1, 2]}.
  function flat(value) {
    if (Array.isArray(value)) return "[" + value.map(flat).join(", ") + "]";
    if (value && typeof value === "object") {
      const items = Object.keys(value).map((k) => JSON.stringify(k) + ": " + flat(value[k]));
      return "{" + items.join(", ") + "}";
    }
    return value === undefined ? "null" : JSON.stringify(value);
  }

  // JSON indented by two spaces; short values and arrays of plain values on one line.
  function toJson(value, indent) {
    indent = indent || "";
    const inner = indent + "  ";
    const line = flat(value);
    if (line.length <= 60 || value === null || typeof value !== "object") return line;
    if (Array.isArray(value)) {
      if (value.every((v) => v === null || typeof v !== "object")) return line;
      const items = value.map((v) => inner + toJson(v, inner));
      return "[\n" + items.join(",\n") + "\n" + indent + "]";
    }
    const items = Object.keys(value).map((k) => {
      return inner + JSON.stringify(k) + ": " + toJson(value[k], inner);
    });
    return "{\n" + items.join(",\n") + "\n" + indent + "}";
  }

  function pretty(text) {
    try {
      return toJson(JSON.parse(text));
    } catch (_) {
      return text;
    }
  }

  // -- schemas -------------------------------------------------------------------------

  function refName(ref) {
    return ref.startsWith(REF_PREFIX) ? ref.slice(REF_PREFIX.length) : ref;
  }

  function resolve(schema) {
    if (!schema || !schema.$ref) return schema || {};
    const found = ((doc.components || {}).schemas || {})[refName(schema.$ref)];
    return found || {};
  }

  // A one-line type: "array[number]", "Point", "string | null", ...
  function typeLabel(schema) {
    if (!schema || Object.keys(schema).length === 0) return "any";
    if (schema.$ref) return refName(schema.$ref);
    if ("const" in schema) return JSON.stringify(schema.const);
    if (Array.isArray(schema.enum)) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
    const choices = schema.anyOf || schema.oneOf;
    if (choices) return choices.map(typeLabel).join(" | ");
    if (schema.allOf) return schema.allOf.map(typeLabel).join(" & ");
    const type = schema.type;
    if (Array.isArray(type)) return type.join(" | ");
    if (type === "array" || (!type && (schema.items || schema.prefixItems))) {
      const inner = schema.prefixItems
        ? schema.prefixItems.map(typeLabel).join(", ")
        : typeLabel(schema.items);
      const fixed = schema.minItems !== undefined && schema.minItems === schema.maxItems;
      return "array[" + inner + "]" + (fixed ? " × " + schema.minItems : "");
    }
    if (type === "object" || (!type && schema.properties)) {
      if (schema.properties && schema.title) return schema.title;
      if (schema.additionalProperties && typeof schema.additionalProperties === "object") {
        return "object[string, " + typeLabel(schema.additionalProperties) + "]";
      }
      return "object";
    }
    if (!type) return "any";
    return schema.format ? type + " (" + schema.format + ")" : type;
  }

  // The constraints and default of a schema, in words.
  function notes(schema) {
    const words = [];
    const add = (key, text) => {
      if (schema[key] !== undefined) words.push(text + " " + JSON.stringify(schema[key]));
    };
    add("minimum", "≥");
    add("exclusiveMinimum", ">");
    add("maximum", "≤");
    add("exclusiveMaximum", "<");
    if (schema.minItems === undefined || schema.minItems !== schema.maxItems) {
      add("minItems", "at least items:");
      add("maxItems", "at most items:");
    }
    add("minLength", "length ≥");
    add("maxLength", "length ≤");
    add("pattern", "matches");
    add("default", "default");
    return words.join(", ");
  }

  // The object schema whose fields a schema shows nested under it, if any.
  function nestedObject(schema, seen) {
    let target = schema;
    while (target && (target.type === "array" || target.items) && !target.properties) {
      target = target.items;
    }
    const choices = target && (target.anyOf || target.oneOf);
    if (choices) target = choices.find((s) => s.$ref || s.properties);
    if (!target) return null;
    if (target.$ref) {
      const name = refName(target.$ref);
      if (seen.has(name)) return null;
      return { schema: resolve(target), seen: new Set(seen).add(name) };
    }
    return target.properties ? { schema: target, seen: seen } : null;
  }

  // A list of an object's fields: name, type, required, description; nested objects indented.
  function fields(schema, seen) {
    const required = new Set(schema.required || []);
    const list = el("ul", { class: "fields" });
    for (const [name, raw] of Object.entries(schema.properties || {})) {
      const prop = raw.$ref ? Object.assign({}, resolve(raw), raw) : raw;
      const row = el(
        "li",
        {},
        el("code", { class: "name" }, name),
        " ",
        el("span", { class: "type" }, typeLabel(raw)),
        " ",
        required.has(name)
          ? el("span", { class: "req" }, "required")
          : el("span", { class: "opt" }, "optional"),
        prop.description ? el("div", { class: "desc" }, prop.description) : null,
        notes(prop) ? el("div", { class: "notes" }, notes(prop)) : null,
      );
      const inner = nestedObject(raw, seen);
      if (inner) row.append(fields(inner.schema, inner.seen));
      list.append(row);
    }
    if (!list.children.length) list.append(el("li", { class: "opt" }, "no fields"));
    return list;
  }

  // How a schema reads: its fields if it is an object, else its type and notes.
  function schemaView(schema, lead) {
    const box = el("div", { class: "schema" });
    const object = schema.properties
      ? { schema: schema, seen: new Set() }
      : nestedObject(schema, new Set());
    const type = el("span", { class: "type" }, typeLabel(schema));
    box.append(el("div", { class: "type-line" }, lead || "", type));
    const resolved = resolve(schema);
    if (resolved.description) box.append(el("div", { class: "desc" }, resolved.description));
    if (notes(schema)) box.append(el("div", { class: "notes" }, notes(schema)));
    if (object) box.append(fields(object.schema, object.seen));
    const raw = el("pre", {}, toJson(schema));
    box.append(el("details", { class: "raw" }, el("summary", {}, "JSON schema"), raw));
    return box;
  }

  // An example value that matches a schema, for the request body.
  function example(schema, seen, depth) {
    seen = seen || new Set();
    depth = depth || 0;
    if (!schema || depth > 12) return null;
    if (schema.$ref) {
      const name = refName(schema.$ref);
      if (seen.has(name)) return null;
      return example(resolve(schema), new Set(seen).add(name), depth + 1);
    }
    if (schema.example !== undefined) return schema.example;
    if (Array.isArray(schema.examples) && schema.examples.length) return schema.examples[0];
    if (schema.default !== undefined) return schema.default;
    if ("const" in schema) return schema.const;
    if (Array.isArray(schema.enum) && schema.enum.length) return schema.enum[0];
    const choices = schema.anyOf || schema.oneOf;
    if (choices && choices.length) {
      return example(choices.find((s) => s.type !== "null") || choices[0], seen, depth + 1);
    }
    if (schema.allOf && schema.allOf.length) {
      const parts = schema.allOf.map((s) => example(s, seen, depth + 1));
      return parts.every((p) => p && typeof p === "object" && !Array.isArray(p))
        ? Object.assign({}, ...parts)
        : parts[0];
    }
    let type = schema.type;
    if (Array.isArray(type)) type = type.find((t) => t !== "null") || "null";
    if (!type && schema.properties) type = "object";
    if (!type && (schema.items || schema.prefixItems)) type = "array";
    switch (type) {
      case "object": {
        const value = {};
        for (const [name, prop] of Object.entries(schema.properties || {})) {
          value[name] = example(prop, seen, depth + 1);
        }
        return value;
      }
      case "array": {
        if (schema.prefixItems) return schema.prefixItems.map((s) => example(s, seen, depth + 1));
        const count = Math.min(Math.max(schema.minItems || 1, 1), 16);
        const items = schema.items || {};
        const item = Object.keys(items).length ? example(items, seen, depth + 1) : 0;
        return Array.from({ length: count }, () => structuredClone(item));
      }
      case "string":
        if (schema.format === "date-time") return new Date().toISOString();
        if (schema.format === "date") return new Date().toISOString().slice(0, 10);
        return "string";
      case "integer":
        if (schema.minimum !== undefined) return schema.minimum;
        return schema.exclusiveMinimum !== undefined ? Math.floor(schema.exclusiveMinimum) + 1 : 0;
      case "number":
        if (schema.minimum !== undefined) return schema.minimum;
        return schema.exclusiveMinimum !== undefined ? schema.exclusiveMinimum + 1 : 0;
      case "boolean":
        return false;
      default:
        return null;
    }
  }

  // -- Server-Sent Events --------------------------------------------------------------

  // feed(text, done) parses the stream's text as it arrives; onEvent(name, data) per event.
  function eventParser(onEvent) {
    let buffer = "";
    let data = [];
    let name = "";
    return function feed(text, done) {
      buffer += text;
      let held = "";
      if (!done && buffer.endsWith("\r")) {
        held = "\r"; // maybe the first half of "\r\n"
        buffer = buffer.slice(0, -1);
      }
      const lines = buffer.split(/\r\n|\n|\r/);
      buffer = (done ? "" : lines.pop()) + held;
      for (const line of lines) {
        if (line === "") {
          if (data.length) onEvent(name || "message", data.join("\n"));
          data = [];
          name = "";
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? "" : line.slice(colon + 1);
          if (value.startsWith(" ")) value = value.slice(1);
          if (field === "data") data.push(value);
          else if (field === "event") name = value;
        }
      }
    };
  }

  // -- sending -------------------------------------------------------------------------

  function statusClass(status) {
    if (status >= 200 && status < 300) return "ok";
    return status >= 500 ? "bad" : "warn";
  }

  function showHeaders(out, response, started) {
    const id = response.headers.get("x-request-id");
    const status = response.status + " " + response.statusText;
    out.status.replaceChildren(
      el("span", { class: "badge " + statusClass(response.status) }, status),
      " ",
      el("span", { class: "muted" }, Math.round(performance.now() - started) + " ms"),
      id ? el("span", { class: "muted" }, " · X-Request-ID ", el("code", {}, id)) : null,
    );
    const rows = [];
    response.headers.forEach((value, name) => rows.push(name + ": " + value));
    const all = el("pre", {}, rows.join("\n"));
    out.headers.replaceChildren(el("summary", {}, "Response headers"), all);
    out.headers.hidden = false;
  }

  async function readStream(response, out) {
    const list = el("ol", { class: "events" });
    out.body.replaceChildren(list);
    let count = 0;
    const feed = eventParser((name, data) => {
      count += 1;
      const label = name === "message" ? null : el("b", {}, name);
      const kind = name === "error" ? "event error" : "event";
      list.append(el("li", { class: kind }, label, el("pre", {}, pretty(data))));
    });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      feed(decoder.decode(value, { stream: true }), false);
    }
    feed(decoder.decode(), true);
    if (!count) list.append(el("li", { class: "muted" }, "(no events)"));
  }

  // -- the page ------------------------------------------------------------------------

  // The description without its first line when that line is the summary.
  function moreThan(summary, description) {
    if (!description) return "";
    return summary && description.startsWith(summary)
      ? description.slice(summary.length).trim()
      : description;
  }

  function requestView(content) {
    const json = content["application/json"];
    const multipart = content["multipart/form-data"];
    const schema = resolve((json || multipart || {}).schema);
    const others = [];
    if (json && multipart) others.push("multipart/form-data (one part per parameter)");
    for (const type of Object.keys(content)) {
      if (type !== "application/json" && type !== "multipart/form-data") {
        others.push("a whole " + type + " body");
      }
    }
    const lead = json
      ? "A JSON object, one key per parameter."
      : "multipart/form-data, one part per parameter; files as file parts.";
    return el(
      "div",
      {},
      el("h3", {}, "Request"),
      el("p", { class: "muted" }, lead),
      fields(schema, new Set()),
      others.length ? el("p", { class: "muted" }, "Also takes " + others.join(", or ") + ".") : "",
    );
  }

  function responseView(ok) {
    const stream = ok["text/event-stream"];
    const json = ok["application/json"];
    const others = Object.keys(ok).filter(
      (type) => type !== "application/json" && type !== "text/event-stream",
    );
    const parts = [el("h3", {}, "Response")];
    if (stream) {
      const lead = "A stream of events (text/event-stream), each one ";
      parts.push(schemaView(stream["x-item"] || {}, lead));
    } else if (json) {
      parts.push(schemaView(json.schema || {}, null));
    }
    if (others.length) {
      const types = others.map((t) => (t === "*/*" ? "a file of any type" : t)).join(", ");
      const lead = json ? "Or, as the Accept header asks: " : "";
      parts.push(el("p", { class: "muted" }, lead + types + "."));
    }
    return el("div", {}, parts);
  }

  function showResult(out, url) {
    if (out.url) URL.revokeObjectURL(out.url);
    out.url = url;
  }

  // The response body: JSON and text as text, a stream event by event, an image as an
  // image, other bytes as a download.
  async function showBody(response, out) {
    const type = (response.headers.get("content-type") || "").split(";")[0].trim();
    if (response.ok && type === "text/event-stream") return readStream(response, out);
    if (!response.ok || !type || type.endsWith("json") || type.startsWith("text/")) {
      const text = pretty(await response.text());
      out.body.replaceChildren(el("pre", { class: response.ok ? "" : "error" }, text));
      return;
    }
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    showResult(out, url);
    const size = blob.size + " bytes of " + type;
    out.body.replaceChildren(
      type.startsWith("image/") ? el("img", { class: "image", src: url, alt: "the answer" }) : "",
      el("p", {}, el("a", { href: url, download: "response" }, "Download"), " (" + size + ")"),
    );
  }

  async function send(route, request, out, buttons) {
    const controller = new AbortController();
    buttons.send.disabled = true;
    buttons.stop.hidden = false;
    buttons.stop.onclick = () => controller.abort();
    out.box.hidden = false;
    out.status.replaceChildren(el("span", { class: "muted" }, "sending…"));
    out.headers.hidden = true;
    out.body.replaceChildren();
    showResult(out, null);
    const started = performance.now();
    try {
      const { body, headers } = request();
      const response = await fetch(route, {
        method: "POST",
        headers: Object.assign(headers, authHeaders()),
        body: body,
        signal: controller.signal,
      });
      showHeaders(out, response, started);
      await showBody(response, out);
    } catch (error) {
      const stopped = error.name === "AbortError";
      out.body.append(
        stopped
          ? el("p", { class: "muted" }, "Stopped.")
          : el("p", { class: "error" }, "Request failed: " + error.message),
      );
    } finally {
      buttons.send.disabled = false;
      buttons.stop.hidden = true;
      checkHealth();
    }
  }

  function quote(text) {
    return "'" + text.replace(/'/g, "'\\''") + "'";
  }

  function curl(route, headers, data) {
    const parts = ["curl", quote(location.origin + route)];
    for (const [name, value] of Object.entries(headers)) {
      parts.push("-H", quote(name + ": " + value));
    }
    if (apiKey()) parts.push("-H", quote("Authorization: Bearer $TIFFIN_API_KEY"));
    return parts.concat(data).join(" ");
  }

  function isFile(schema) {
    const resolved = resolve(schema);
    const choices = resolved.anyOf || resolved.oneOf;
    return resolved.format === "binary" || Boolean(choices && choices.some(isFile));
  }

  // The body editor of an API that takes JSON: a textarea holding an example.
  function jsonEditor(name, schema, changed) {
    const textarea = el("textarea", {
      class: "body",
      spellcheck: "false",
      "aria-label": "Request body for " + name,
    });
    const reset = () => {
      textarea.value = toJson(example(schema));
      textarea.rows = Math.min(Math.max(textarea.value.split("\n").length, 3), 20);
      changed();
    };
    textarea.addEventListener("input", changed);
    return {
      node: textarea,
      reset: reset,
      body: () => ({ body: textarea.value, headers: { "Content-Type": "application/json" } }),
      curl: () => ["-d", quote(textarea.value.replace(/\s*\n\s*/g, " "))],
    };
  }

  // The body editor of an API that needs files: one input per part (multipart/form-data).
  function formEditor(schema, changed) {
    const required = new Set(schema.required || []);
    // a text parameter takes its part as it is; other values are sent as JSON
    const isText = (prop) => resolve(prop).type === "string";
    const inputs = Object.entries(schema.properties || {}).map(([name, prop]) => {
      const hint = isText(prop) ? "text" : "a JSON value";
      const input = isFile(prop)
        ? el("input", { type: "file", name: name })
        : el("input", { type: "text", name: name, placeholder: hint });
      input.addEventListener("change", changed);
      input.addEventListener("input", changed);
      return input;
    });
    const reset = () => {
      for (const input of inputs) {
        const prop = schema.properties[input.name];
        if (input.type === "file") input.value = "";
        else if (!required.has(input.name)) input.value = "";
        else input.value = isText(prop) ? example(prop) : toJson(example(prop));
      }
      changed();
    };
    const body = () => {
      const data = new FormData();
      for (const input of inputs) {
        if (input.type === "file" && input.files.length) data.append(input.name, input.files[0]);
        else if (input.type !== "file" && input.value.trim()) data.append(input.name, input.value);
      }
      return { body: data, headers: {} };
    };
    const curlParts = () =>
      inputs.flatMap((input) => {
        if (input.type === "file") {
          const file = input.files.length ? input.files[0].name : "FILE";
          return ["-F", quote(input.name + "=@" + file)];
        }
        return input.value.trim() ? ["-F", quote(input.name + "=" + input.value)] : [];
      });
    const rows = inputs.map((input) => {
      const label = input.name + (required.has(input.name) ? " *" : "");
      return el("label", { class: "field" }, el("code", {}, label), input);
    });
    return { node: el("div", { class: "form" }, rows), reset: reset, body: body, curl: curlParts };
  }

  function tryIt(route, name, content, ok) {
    const form = !content["application/json"] && Boolean(content["multipart/form-data"]);
    const body = content[form ? "multipart/form-data" : "application/json"] || {};
    const schema = resolve(body.schema);
    const answers = Object.keys(ok);
    const accept = el("select", { "aria-label": "Accept", hidden: answers.length < 2 });
    accept.append(...answers.map((type) => el("option", { value: type }, type)));
    const command = el("pre", { class: "curl" });
    const headers = () => ({ Accept: accept.value || "*/*" });
    const changed = () => {
      const shown = accept.selectedIndex > 0 ? headers() : {};
      command.textContent = curl(route, Object.assign(editor.body().headers, shown), editor.curl());
    };
    const editor = form ? formEditor(schema, changed) : jsonEditor(name, schema, changed);
    accept.addEventListener("change", changed);
    editor.reset();

    const out = {
      box: el("div", { class: "result", hidden: true }),
      status: el("div", { class: "status" }),
      headers: el("details", { class: "headers", hidden: true }),
      body: el("div", { class: "response-body" }),
      url: null,
    };
    out.box.append(out.status, out.headers, out.body);
    const buttons = {
      send: el("button", { type: "button", class: "send" }, "Send"),
      stop: el("button", { type: "button", class: "stop", hidden: true }, "Stop"),
    };
    const request = () => {
      const made = editor.body();
      Object.assign(made.headers, headers());
      return made;
    };
    buttons.send.addEventListener("click", () => send(route, request, out, buttons));
    editor.node.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) buttons.send.click();
    });
    const reset = el("button", { type: "button", class: "link", onclick: editor.reset }, "Reset");
    return [
      el("h3", {}, "Try it"),
      editor.node,
      el(
        "div",
        { class: "actions" },
        buttons.send,
        buttons.stop,
        reset,
        accept,
        el("span", { class: "muted" }, "Ctrl+Enter sends"),
      ),
      el("details", { class: "curl-box" }, el("summary", {}, "As a curl command"), command),
      out.box,
    ];
  }

  function apiSection(route, op) {
    const name = op.operationId;
    const content = (op.requestBody || {}).content || {};
    const ok = ((op.responses || {})["200"] || {}).content || {};
    const summary = op.summary && op.summary !== name ? op.summary : "";
    const more = moreThan(op.summary, op.description);
    return el(
      "section",
      { class: "api", id: "api-" + name, "data-api": name },
      el(
        "h2",
        {},
        el("span", { class: "method" }, "POST"),
        el("code", { class: "route" }, route),
        el("span", { class: "api-name" }, name),
      ),
      summary ? el("p", { class: "summary" }, summary) : null,
      more ? el("p", { class: "description" }, more) : null,
      el("div", { class: "columns" }, requestView(content), responseView(ok)),
      tryIt(route, name, content, ok),
    );
  }

  function render() {
    const info = doc.info || {};
    document.title = (info.title || "tiffin") + " · API";
    document.getElementById("title").textContent = info.title || "tiffin";
    document.getElementById("version").textContent = info.version ? "v" + info.version : "";
    document
      .getElementById("intro")
      .replaceChildren(info.description ? el("p", { class: "description" }, info.description) : "");
    const links = el("ul", {});
    const sections = [];
    for (const [route, item] of Object.entries(doc.paths || {})) {
      const op = item.post;
      if (!op || !op.operationId) continue;
      // a task is tried by submitting it; its cancel route needs an id from a submission
      const task = op["x-tiffin-task"];
      if (task && task.action !== "submit") continue;
      const link = el("a", { href: "#api-" + op.operationId }, op.operationId);
      links.append(el("li", {}, link, el("span", { class: "muted" }, " " + route)));
      sections.push(apiSection(route, op));
    }
    document.getElementById("nav").replaceChildren(el("h2", {}, "APIs"), links);
    const apis = document.getElementById("apis");
    apis.replaceChildren(...sections);
    if (!sections.length) apis.append(el("p", {}, "This service has no APIs."));
    const id = decodeURIComponent(location.hash.slice(1));
    const target = id && document.getElementById(id);
    if (target) target.scrollIntoView();
  }

  function problem(text) {
    document.getElementById("apis").replaceChildren(el("p", { class: "error" }, text));
  }

  async function loadSpec() {
    let response;
    try {
      response = await fetch("/openapi.json", { headers: authHeaders() });
    } catch (error) {
      problem("Cannot reach the server (" + error.message + "). Reload once it is up.");
      return;
    }
    if (response.status === 401) {
      problem("This server needs an API key to describe its APIs. Enter it above.");
    } else if (!response.ok) {
      problem("/openapi.json answered " + response.status + ". Look in the server's log.");
    } else {
      doc = await response.json();
      render();
    }
  }

  async function checkHealth() {
    const badge = document.getElementById("health");
    try {
      const response = await fetch("/readyz", { cache: "no-store" });
      badge.textContent = response.ok ? "ready" : "not ready (" + response.status + ")";
      badge.className = "badge " + (response.ok ? "ok" : "warn");
    } catch (_) {
      badge.textContent = "unreachable";
      badge.className = "badge bad";
    }
  }

  function start() {
    const input = document.getElementById("api-key");
    input.value = sessionStorage.getItem(KEY_STORAGE) || "";
    input.addEventListener("change", () => {
      sessionStorage.setItem(KEY_STORAGE, apiKey());
      if (!doc) loadSpec();
      const changed = new Event("input");
      document.querySelectorAll("textarea.body").forEach((t) => t.dispatchEvent(changed));
    });
    document.getElementById("health").addEventListener("click", checkHealth);
    checkHealth();
    loadSpec();
  }

  start();
})();
