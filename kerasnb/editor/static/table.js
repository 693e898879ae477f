// The layer table of the kerasnb editor (an anywidget ES module; no build step, no CDN).
//
// Python decides, this draws. Python sends one page of rows (`rows`), what the selected row
// offers (`inline`), which rows show their reason (`expanded`) and which nested models are
// folded (`collapsed`); user gestures come back as traits: `selected` / `selected_call`, `page`,
// `expanded`, `collapsed`, and `action` ({kind, layer, call, type, params, seq}) for edits.
// Every string from the model goes in with textContent: a layer named "<img onerror=...>" is
// shown as those characters.

const COLUMNS = ["layer", "type", "output shape", "params", "trainable", "status", "edit"];

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

// A button that adds ``path`` to (or takes it out of) the list trait ``key``: folding a nested
// model, unfolding a row's reason. ``on`` says whether the path is in the list now.
function listToggle(model, key, path, on, cls, text, title, expanded) {
  const toggle = el("button", cls, text);
  toggle.title = title;
  toggle.setAttribute("aria-expanded", String(expanded));
  toggle.addEventListener("click", (e) => {
    e.stopPropagation();
    const now = (model.get(key) || []).filter((p) => p !== path);
    if (!on) now.push(path);
    model.set(key, now);
    model.save_changes();
  });
  return toggle;
}

function sameKey(row, model) {
  const call = model.get("selected_call");
  return row.path === model.get("selected") && (row.call ?? -1) === call;
}

function send(model, action) {
  const last = model.get("action") || {};
  model.set("action", { ...action, seq: (last.seq || 0) + 1 });
  model.save_changes();
}

function select(model, row) {
  model.set("selected_call", row.call ?? -1);
  model.set("selected", row.path);
  model.save_changes();
}

function fieldInput(field, disabled) {
  // One parameter of the selected row's type: a dropdown, a checkbox, or a text box.
  let input;
  if (field.choices) {
    input = el("select");
    field.choices.forEach((choice, i) => {
      const option = el("option", null, choice === null ? "None" : choice);
      option.value = String(i);
      if (JSON.stringify(choice) === JSON.stringify(field.value)) option.selected = true;
      input.appendChild(option);
    });
    input.readValue = () => field.choices[Number(input.value)];
  } else if (field.kind === "bool") {
    input = el("input");
    input.type = "checkbox";
    input.checked = Boolean(field.value);
    input.readValue = () => input.checked;
  } else {
    input = el("input");
    input.type = field.kind === "text" ? "text" : "number";
    if (field.kind === "float") input.step = "any";
    input.value = field.value === null ? "" : String(field.value);
    input.size = 8;
    input.readValue = () => {
      if (field.kind === "int") return input.value.trim() === "" ? null : Number.parseInt(input.value, 10);
      if (field.kind === "float") return input.value.trim() === "" ? null : Number.parseFloat(input.value);
      return input.value;
    };
  }
  input.classList.add("kn-param", `kn-param-${field.name}`);
  input.dataset.param = field.name;
  input.title = field.name;
  input.disabled = disabled;
  return input;
}

function inlineControls(model, row, typeCell, editCell) {
  // The selected row carries its Type dropdown and its parameter fields.
  const inline = model.get("inline") || {};
  if (inline.path !== row.path || (inline.call ?? -1) !== (row.call ?? -1)) return;
  const busy = model.get("busy");
  const picker = el("select", "kn-row-type");
  picker.title = inline.reason || "choose what this layer becomes";
  for (const label of inline.types || []) {
    const option = el("option", null, label);
    option.value = label;
    if (label === inline.type) option.selected = true;
    picker.appendChild(option);
  }
  picker.disabled = busy || Boolean(inline.disabled);
  picker.addEventListener("click", (e) => e.stopPropagation());
  picker.addEventListener("keydown", (e) => e.stopPropagation());  // its arrows change the type, not the row
  picker.addEventListener("change", () => {
    send(model, { kind: "replace", layer: row.path, call: row.call ?? null, type: picker.value, params: {} });
  });
  typeCell.textContent = "";
  typeCell.appendChild(picker);

  const box = el("div", "kn-row-params");
  const inputs = (inline.fields || []).map((field) => {
    const label = el("label", "kn-field");
    label.appendChild(el("span", "kn-field-name", field.name));
    const input = fieldInput(field, busy);
    label.appendChild(input);
    box.appendChild(label);
    return input;
  });
  for (const input of inputs) {
    input.addEventListener("click", (e) => e.stopPropagation());
    input.addEventListener("keydown", (e) => e.stopPropagation());
    input.addEventListener("change", () => {
      const params = {};
      for (const each of inputs) params[each.dataset.param] = each.readValue();
      send(model, { kind: "params", layer: row.path, call: row.call ?? null, type: inline.type, params });
    });
  }
  const refused = inline.refused || [];
  if (refused.length) {
    const details = el("details", "kn-refused");
    details.appendChild(el("summary", null, `${refused.length} type(s) not offered here`));
    const list = el("ul");
    for (const [label, reason] of refused) {
      const item = el("li");
      item.appendChild(el("b", null, label));
      item.appendChild(document.createTextNode(`: ${reason}`));
      list.appendChild(item);
    }
    details.appendChild(list);
    details.addEventListener("click", (e) => e.stopPropagation());
    box.appendChild(details);
  }
  editCell.appendChild(box);
}

// A layer's activations on the editor's data (show_editor(model, data=...)): mean, std and the
// share of exact zeros, with a bar for that share. Numbers only: nothing from the model.
function statsCell(act) {
  const cell = el("td", "kn-act");
  if (!act) return cell;
  const fmt = (v) => (v === null || v === undefined ? "\u2014" : Number(v).toPrecision(3));
  cell.appendChild(el("span", "kn-act-mean", `\u03bc ${fmt(act.mean)}`));
  cell.appendChild(el("span", "kn-act-std", ` \u03c3 ${fmt(act.std)}`));
  const zeros = act.zeros === null || act.zeros === undefined ? null : Number(act.zeros);
  cell.appendChild(el("span", "kn-act-zeros", ` 0s ${zeros === null ? "\u2014" : Math.round(100 * zeros) + "%"}`));
  const bar = el("div", "kn-act-bar");
  bar.style.width = `${zeros === null ? 0 : Math.round(100 * zeros)}%`;
  cell.appendChild(bar);
  cell.title = "activations on the editor's data: mean, standard deviation, share of exact zeros";
  return cell;
}

function drawRow(model, row, body, withStats) {
  const sub = row.call !== null && row.call !== undefined;
  const tr = el("tr", sub ? "kn-call" : "kn-row");
  tr.dataset.layer = row.path;
  tr.dataset.status = row.status;
  if (sub) tr.dataset.call = String(row.call);
  if (row.status === "removed") tr.classList.add("kn-removed");
  if (sameKey(row, model)) tr.classList.add("kn-selected");

  const name = el("td", "kn-name");
  name.style.paddingLeft = `${4 + 14 * (row.depth + (sub ? 1 : 0))}px`;
  name.title = row.path;
  if (row.group) {
    const folded = (model.get("collapsed") || []).includes(row.path);
    name.appendChild(listToggle(model, "collapsed", row.path, folded, "kn-collapse",
                                folded ? "\u25b8" : "\u25be",
                                folded ? "show the layers inside" : "fold the layers inside", !folded));
  }
  name.appendChild(el("code", null, row.name));
  if (!sub && row.calls > 1) {
    const hint = el("span", "kn-calls", `\u00d7${row.calls} calls`);
    hint.title = `called ${row.calls} times, sharing its weights; each call is a row below`;
    name.appendChild(hint);
  }
  const open = (model.get("expanded") || []).includes(row.path);
  if (open && row.reason && !sub) name.appendChild(el("div", "kn-reason", row.reason));
  tr.appendChild(name);

  const typeCell = el("td", "kn-type", sub ? "" : row.type);
  tr.appendChild(typeCell);
  tr.appendChild(el("td", "kn-shape", sub ? "" : row.shape));
  tr.appendChild(el("td", "kn-num", sub ? "" : row.params.toLocaleString("en-US")));
  tr.appendChild(el("td", null, sub ? "" : row.trainable ? "yes" : "no"));

  const statusCell = el("td", "kn-status");
  if (!sub) {
    const badge = el("span", "kn-badge", row.status);
    badge.style.background = (model.get("colors") || {})[row.status] || "#9e9e9e";
    badge.title = row.reason || row.status;
    statusCell.appendChild(badge);
    if (row.reason) {
      statusCell.appendChild(listToggle(model, "expanded", row.path, open, "kn-expand", open ? "\u2212" : "?",
                                        open ? "hide why" : "why this status", open));
    }
  }
  tr.appendChild(statusCell);
  const editCell = el("td", "kn-choice");
  editCell.appendChild(el("span", null, row.choice));
  tr.appendChild(editCell);
  if (withStats) tr.appendChild(statsCell(sub ? null : row.act));
  if (tr.classList.contains("kn-selected")) inlineControls(model, row, typeCell, editCell);
  tr.addEventListener("click", () => {
    if (!sameKey(row, model)) select(model, row);
  });
  body.appendChild(tr);
}

function render({ model, el: host }) {
  const root = el("div", "kn-table");
  root.tabIndex = 0;
  // Notebook 7 would take the arrow keys as "next cell" and move the focus out of the table.
  root.setAttribute("data-lm-suppress-shortcuts", "true");
  host.appendChild(root);

  function draw() {
    const hadFocus = root.contains(document.activeElement);
    root.textContent = "";
    const progress = model.get("progress") || {};
    if (progress.total) {
      const bar = el("div", "kn-progress");
      const meter = el("progress");
      meter.max = progress.total;
      meter.value = progress.done;
      bar.appendChild(meter);
      bar.appendChild(el("span", null, ` rebuilding: ${progress.done} / ${progress.total} layers`));
      root.appendChild(bar);
    }
    const rows = model.get("rows") || [];
    if (!rows.length) {
      root.appendChild(el("p", "kn-empty", model.get("empty") || "No rows."));
    } else {
      const table = el("table", "kn-layers");
      const head = el("tr");
      const withStats = rows.some((row) => row.act);
      for (const c of withStats ? [...COLUMNS, "activations"] : COLUMNS) head.appendChild(el("th", null, c));
      const thead = el("thead");
      thead.appendChild(head);
      table.appendChild(thead);
      const body = el("tbody");
      for (const row of rows) drawRow(model, row, body, withStats);
      table.appendChild(body);
      root.appendChild(table);
    }
    const pages = model.get("pages");
    const page = model.get("page");
    const pager = el("div", "kn-pager");
    const size = model.get("page_size");
    const total = model.get("total");
    const first = total ? page * size + 1 : 0;
    pager.appendChild(el("span", "kn-count", `rows ${first}\u2013${Math.min(total, (page + 1) * size)} of ${total}`));
    if (pages > 1) {
      for (const [text, to, cls] of [["\u25c2 previous", page - 1, "kn-prev"], ["next \u25b8", page + 1, "kn-next"]]) {
        const button = el("button", cls, text);
        button.disabled = to < 0 || to >= pages;
        button.addEventListener("click", () => {
          model.set("page", to);
          model.save_changes();
        });
        pager.appendChild(button);
      }
      pager.appendChild(el("span", "kn-page", `page ${page + 1} of ${pages}`));
    }
    root.appendChild(pager);
    if (hadFocus) root.focus({ preventScroll: true });
    // A newly selected row (by a key, the graph, the layer list) is scrolled into view.
    const key = `${model.get("selected")}#${model.get("selected_call")}`;
    const chosen = root.querySelector("tr.kn-selected");
    if (chosen && key !== shownKey) chosen.scrollIntoView({ block: "nearest" });
    if (chosen) shownKey = key;
  }
  let shownKey = null;

  root.addEventListener("click", (e) => {
    // A click on a row (not on its controls) lets the arrow keys move from there.
    if (e.target && !["SELECT", "OPTION", "INPUT", "BUTTON", "SUMMARY"].includes(e.target.tagName)) root.focus({ preventScroll: true });
  });

  root.addEventListener("keydown", (e) => {
    if (e.key !== "ArrowDown" && e.key !== "ArrowUp") return;
    e.preventDefault();
    const rows = model.get("rows") || [];
    const at = rows.findIndex((r) => sameKey(r, model));
    const by = e.key === "ArrowDown" ? 1 : -1;
    if (at >= 0 && at + by >= 0 && at + by < rows.length) {
      select(model, rows[at + by]);
    } else {
      send(model, { kind: "move", by });  // across a page edge: Python knows the next page
    }
  });

  const names = ["rows", "inline", "selected", "selected_call", "expanded", "collapsed", "page", "pages",
                 "progress", "busy", "empty", "total"];
  // One message from Python often changes several traits: draw once for all of them.
  let queued = false;
  const schedule = () => {
    if (queued) return;
    queued = true;
    queueMicrotask(() => {
      queued = false;
      draw();
    });
  };
  for (const name of names) model.on(`change:${name}`, schedule);
  draw();
  return () => {
    for (const name of names) model.off(`change:${name}`, schedule);
  };
}

export default { render };
