// The built-in API reference: renders /openapi.json (operations, parameters, bodies, responses,
// schemas) with no external script, so /docs works offline. Plain JavaScript, no build step.
"use strict";

const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
};
const refName = (ref) => ref.split("/").pop();
// text with `code` spans (the descriptions are Markdown; only inline code is rendered)
const prose = (tag, className, text) => {
  const node = el(tag, { className });
  String(text).split("`").forEach((part, i) => node.append(i % 2 ? el("code", {}, part) : part));
  return node;
};
const refLink = (ref) => el("a", { href: `#schema-${refName(ref)}`, className: "type" }, refName(ref));

function constraints(s) {
  const out = [];
  const add = (key, label = key) => { if (s[key] !== undefined) out.push(`${label} ${JSON.stringify(s[key])}`); };
  add("minimum"); add("maximum"); add("minLength"); add("maxLength"); add("maxProperties");
  add("pattern"); add("format"); add("default");
  if (s.propertyNames) out.push(`keys: ${constraints(s.propertyNames).join(", ")}`);
  return out;
}

// a schema as an inline type: links to named schemas, unions with |, arrays and maps spelled out
function typeOf(s) {
  if (!s || typeof s !== "object") return el("span", { className: "type" }, "any");
  if (s.$ref) return refLink(s.$ref);
  const alternatives = s.anyOf || s.oneOf;
  if (alternatives && !s.type) {
    const span = el("span");
    alternatives.forEach((a, i) => { if (i) span.append(" | "); span.append(typeOf(a)); });
    return span;
  }
  if (s.enum) return el("span", { className: "type" }, s.enum.map((v) => JSON.stringify(v)).join(" | "));
  if (s.const !== undefined) return el("span", { className: "type" }, JSON.stringify(s.const));
  if (s.type === "array") return el("span", {}, "array of ", typeOf(s.items));
  if (s.type === "object" && s.additionalProperties && typeof s.additionalProperties === "object" && !s.properties) {
    return el("span", {}, "object of ", typeOf(s.additionalProperties));
  }
  return el("span", { className: "type" }, Array.isArray(s.type) ? s.type.join(" | ") : (s.type || "any"));
}

function typeCell(s) {
  const cell = el("td", {}, typeOf(s));
  const c = constraints(s || {});
  if (c.length) cell.append(el("div", { className: "constraint" }, c.join(", ")));
  return cell;
}

function propertiesTable(schema) {
  const required = new Set(schema.required || []);
  const rows = Object.entries(schema.properties || {}).map(([name, p]) => el("tr", {},
    el("td", {}, el("code", {}, name), required.has(name) ? " *" : ""),
    typeCell(p),
    el("td", {}, p.description || p.title || "")));
  return el("table", {}, el("tr", {}, el("th", {}, "field"), el("th", {}, "type"), el("th", {}, "description")), ...rows);
}

function operation(path, method, op) {
  const body = el("div", { className: "body" });
  if (op.description) body.append(prose("p", "description", op.description));
  if (op.security && op.security.length) body.append(el("p", { className: "lock" }, "Needs the API key (X-API-Key header, Bearer token or ?key=)."));
  if (op.parameters && op.parameters.length) {
    body.append(el("h4", {}, "Parameters"));
    body.append(el("table", {}, el("tr", {}, el("th", {}, "name"), el("th", {}, "in"), el("th", {}, "type"), el("th", {}, "description")),
      ...op.parameters.map((p) => el("tr", {},
        el("td", {}, el("code", {}, p.name), p.required ? " *" : ""), el("td", {}, p.in), typeCell(p.schema),
        el("td", {}, p.description || (p.schema && p.schema.description) || "")))));
  }
  if (op.requestBody) {
    body.append(el("h4", {}, "Request body"));
    for (const [media, content] of Object.entries(op.requestBody.content || {})) {
      body.append(el("p", {}, el("code", {}, media), ": ", typeOf(content.schema)));
    }
  }
  body.append(el("h4", {}, "Responses"));
  body.append(el("table", {}, el("tr", {}, el("th", {}, "status"), el("th", {}, "description"), el("th", {}, "body")),
    ...Object.entries(op.responses || {}).map(([status, r]) => {
      const cell = el("td");
      for (const [media, content] of Object.entries(r.content || {})) {
        const line = el("div", {}, el("code", {}, media));
        if (content.schema) line.append(": ", typeOf(content.schema));
        cell.append(line);
      }
      return el("tr", {}, el("td", {}, el("code", {}, status)), el("td", {}, r.description || ""), cell);
    })));
  const id = `op-${method}-${path.replace(/[^a-z0-9]+/gi, "-")}`;
  return el("details", { className: "op", id },
    el("summary", {}, el("span", { className: `method ${method}` }, method.toUpperCase()),
      el("span", { className: "path" }, path), el("span", { className: "muted" }, op.summary || "")),
    body);
}

async function main() {
  const status = document.getElementById("docs-status");
  let spec;
  try {
    const response = await fetch("/openapi.json");
    spec = await response.json();
  } catch (e) {
    status.textContent = `cannot load /openapi.json: ${e.message}`;
    status.classList.add("error");
    return;
  }
  status.textContent = "";
  document.getElementById("api-version").textContent = `version ${spec.info.version} · OpenAPI ${spec.openapi}`;
  document.getElementById("api-summary").textContent = spec.info.summary || "";
  document.getElementById("api-description").replaceWith(prose("div", "description", spec.info.description || ""));
  const ops = document.getElementById("operations");
  const toc = document.getElementById("toc");
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const node = operation(path, method, op);
      ops.append(node);
      toc.append(el("a", { href: `#${node.id}` }, el("span", { className: `method ${method}` }, method.toUpperCase()), " ", path));
    }
  }
  const schemas = (spec.components && spec.components.schemas) || {};
  document.getElementById("schemas-title").hidden = !Object.keys(schemas).length;
  for (const [name, schema] of Object.entries(schemas).sort()) {
    const box = el("div", { className: "schema", id: `schema-${name}` }, el("h3", {}, name));
    if (schema.description) box.append(prose("p", "description", schema.description));
    if (schema.properties) box.append(propertiesTable(schema));
    else box.append(el("p", {}, typeOf(schema)));
    document.getElementById("schemas").append(box);
  }
  const target = location.hash && document.getElementById(location.hash.slice(1));
  if (target) {
    if (target.tagName === "DETAILS") target.open = true;
    target.scrollIntoView();
  }
}

document.addEventListener("DOMContentLoaded", main);
