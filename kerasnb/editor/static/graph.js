// The graph view of kerasnb's editor: draws what kerasnb/editor/layout.py computed.
// Python decides (positions, statuses, selection); this file only draws SVG and reports clicks.
// Every string from a model goes in through textContent or setAttribute, never parsed as HTML.

const SVG = "http://www.w3.org/2000/svg";
const CHAR_W = 6.6; // keep in step with layout.py: labels longer than a node are cut
const HEADER_CHAR_W = 7.2;
const LABEL_MIN_SCALE = 0.45; // below this many screen pixels per unit, labels are hidden
const NEUTRAL = "#b0bec5";

function el(tag, attrs, parent) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  if (parent) parent.appendChild(node);
  return node;
}

function html(tag, className, parent) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (parent) parent.appendChild(node);
  return node;
}

function cut(text, width, charWidth = CHAR_W) {
  const room = Math.max(3, Math.floor((width - 10) / charWidth));
  return text.length > room ? text.slice(0, room - 1) + "\u2026" : text;
}

function textColor(fill) {
  // dark text on light fills (the yellow of kept_input_changed), white on the rest
  const m = /^#([0-9a-f]{6})$/i.exec(fill || "");
  if (!m) return "#111";
  const n = parseInt(m[1], 16);
  const lum = (0.299 * (n >> 16) + 0.587 * ((n >> 8) & 255) + 0.114 * (n & 255)) / 255;
  return lum > 0.6 ? "#111" : "#fff";
}

function curve(points) {
  // vertical tangents at every point: straight runs stay straight, bends are smooth
  let d = `M${points[0][0]},${points[0][1]}`;
  for (let i = 1; i < points.length; i++) {
    const [x0, y0] = points[i - 1];
    const [x1, y1] = points[i];
    const ym = (y0 + y1) / 2;
    d += x0 === x1 ? ` L${x1},${y1}` : ` C${x0},${ym} ${x1},${ym} ${x1},${y1}`;
  }
  return d;
}

function render({ model, el: host }) {
  const root = html("div", "kn-graph", host);
  const bar = html("div", "kn-graph-bar", root);
  const fit = html("button", "kn-graph-fit", bar);
  fit.type = "button";
  fit.textContent = "fit";
  fit.title = "Show the whole graph";
  const zoomIn = html("button", "kn-graph-zoom-in", bar);
  zoomIn.type = "button";
  zoomIn.textContent = "+";
  const zoomOut = html("button", "kn-graph-zoom-out", bar);
  zoomOut.type = "button";
  zoomOut.textContent = "\u2212";
  const legend = html("div", "kn-graph-legend", bar);

  const svg = el("svg", { class: "kn-graph-svg", role: "img" }, root);
  const defs = el("defs", {}, svg);
  const marker = el("marker", {
    id: `kn-arrow-${Math.random().toString(36).slice(2)}`, viewBox: "0 0 8 8", refX: 7, refY: 4,
    markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse",
  }, defs);
  el("path", { d: "M0,0 L8,4 L0,8 z", fill: "#78909c" }, marker);
  const groupLayer = el("g", { class: "kn-groups" }, svg);
  const edgeLayer = el("g", { class: "kn-edges" }, svg);
  const nodeLayer = el("g", { class: "kn-nodes" }, svg);

  let view = { x: 0, y: 0, w: 100, h: 100 };
  let nodeEls = new Map(); // id -> g.kn-node
  let groupEls = new Map(); // id -> g.kn-group
  let boxes = new Map(); // id -> {x, y, w, h} of nodes and groups

  function palette() {
    return model.get("palette") || {};
  }

  let pixels = 1; // screen pixels per layout unit

  function scale() {
    return pixels;
  }

  function applyView() {
    svg.setAttribute("viewBox", `${view.x} ${view.y} ${view.w} ${view.h}`);
    root.classList.toggle("kn-far", scale() < LABEL_MIN_SCALE);
  }

  function size() {
    const width = svg.clientWidth || host.clientWidth || 600;
    const height = svg.clientHeight || 400;
    return [width, height];
  }

  function setScale(s, cx, cy) {
    const [width, height] = size();
    pixels = Math.min(Math.max(s, 0.005), 8);
    const w = width / pixels;
    const h = height / pixels;
    view = { x: cx - w / 2, y: cy - h / 2, w, h };
    applyView();
  }

  function fitAll() {
    const graph = model.get("graph") || {};
    const gw = Math.max(graph.width || 1, 1) + 20;
    const gh = Math.max(graph.height || 1, 1) + 20;
    const [width, height] = size();
    setScale(Math.min(width / gw, height / gh, 1.0), gw / 2 - 10, gh / 2 - 10);
  }

  function start() {
    // readable from the top: the whole width if it fits at a legible scale, else the first layers
    const graph = model.get("graph") || {};
    const gw = Math.max(graph.width || 1, 1) + 20;
    const gh = Math.max(graph.height || 1, 1) + 20;
    const [width, height] = size();
    const whole = Math.min(width / gw, height / gh, 1.0);
    if (whole >= 0.6) return fitAll();
    const s = Math.max(Math.min(width / gw, 1.0), 0.6);
    setScale(s, gw / 2 - 10, height / s / 2 - 10);
  }

  function statusOf(id, fallback) {
    const statuses = model.get("statuses") || {};
    return Object.prototype.hasOwnProperty.call(statuses, id) ? String(statuses[id]) : (fallback || "");
  }

  function colorOf(status) {
    const entry = palette()[status];
    return entry ? entry[0] : NEUTRAL;
  }

  function draw() {
    const graph = model.get("graph") || {};
    for (const layer of [groupLayer, edgeLayer, nodeLayer]) layer.replaceChildren();
    nodeEls = new Map();
    groupEls = new Map();
    boxes = new Map();
    for (const group of graph.groups || []) {
      const g = el("g", { class: "kn-group" + (group.collapsed ? " kn-collapsed" : "") }, groupLayer);
      g.setAttribute("data-group", group.id);
      el("rect", { class: "kn-group-box", x: group.x, y: group.y, width: group.w, height: group.h, rx: 6 }, g);
      const header = el("g", { class: "kn-group-header" }, g);
      el("rect", { class: "kn-group-head", x: group.x, y: group.y, width: group.w, height: 20, rx: 6 }, header);
      const label = el("text", { x: group.x + 8, y: group.y + 14 }, header);
      label.textContent = cut(`${group.collapsed ? "\u25b8" : "\u25be"} ${group.name} (${group.type})`, group.w, HEADER_CHAR_W);
      const title = el("title", {}, header);
      title.textContent = `${group.id} (${group.type}): click to ${group.collapsed ? "expand" : "collapse"}`;
      header.addEventListener("click", (event) => {
        event.stopPropagation();
        if (moved) return;
        const collapsed = new Set(model.get("collapsed") || []);
        if (collapsed.has(group.id)) collapsed.delete(group.id);
        else collapsed.add(group.id);
        model.set("collapsed", [...collapsed]);
        model.save_changes();
      });
      groupEls.set(group.id, g);
      boxes.set(group.id, group);
    }
    const edges = graph.edges || [];
    const paths = graph.paths || [];
    const frag = document.createDocumentFragment();
    edges.forEach(([src, dst], i) => {
      const points = paths[i];
      if (!points || points.length < 2) return;
      const path = el("path", { class: "kn-edge", d: curve(points), "marker-end": `url(#${marker.id})` }, frag);
      path.setAttribute("data-src", src);
      path.setAttribute("data-dst", dst);
    });
    edgeLayer.appendChild(frag);
    const nodes = document.createDocumentFragment();
    for (const node of graph.nodes || []) {
      const g = el("g", { class: "kn-node" }, nodes);
      g.setAttribute("data-layer", node.id);
      g.setAttribute("transform", `translate(${node.x},${node.y})`);
      el("rect", { width: node.w, height: node.h, rx: 4 }, g);
      const name = el("text", { class: "kn-name", x: node.w / 2, y: 14 }, g);
      name.textContent = cut(node.name, node.w);
      const kind = el("text", { class: "kn-type", x: node.w / 2, y: 27 }, g);
      kind.textContent = cut(node.calls > 1 ? `${node.type} \u00d7${node.calls}` : node.type, node.w);
      el("title", {}, g);
      g.addEventListener("click", (event) => {
        event.stopPropagation();
        if (moved) return;
        model.set("selected", node.id);
        model.save_changes();
      });
      nodeEls.set(node.id, g);
      boxes.set(node.id, node);
      g._kn = node;
    }
    nodeLayer.appendChild(nodes);
  }

  function recolor() {
    const counts = new Map();
    for (const [id, g] of nodeEls) {
      const node = g._kn;
      const status = statusOf(id, node.status);
      const fill = colorOf(status);
      g.setAttribute("data-status", status);
      const rect = g.firstChild;
      rect.setAttribute("fill", fill);
      for (const text of g.querySelectorAll("text")) text.setAttribute("fill", textColor(fill));
      g.lastChild.textContent = `${id}\n${node.type}${node.calls > 1 ? `, called ${node.calls} times` : ""}` +
        (status ? `\n${status}` : "");
      if (status) counts.set(status, (counts.get(status) || 0) + 1);
    }
    for (const [id, g] of groupEls) {
      const status = statusOf(id, "");
      g.setAttribute("data-status", status);
      g.querySelector(".kn-group-head").setAttribute("fill", status ? colorOf(status) : "#eceff1");
      g.querySelector(".kn-group-header text").setAttribute("fill", status ? textColor(colorOf(status)) : "#263238");
    }
    legend.replaceChildren();
    const order = Object.keys(palette());
    for (const status of [...counts.keys()].sort((a, b) => order.indexOf(a) - order.indexOf(b))) {
      const item = html("span", "kn-legend-item", legend);
      item.setAttribute("data-status", status);
      const swatch = html("span", "kn-swatch", item);
      swatch.style.background = colorOf(status);
      const words = html("span", "", item);
      words.textContent = `${status} ${counts.get(status)}`;
      const entry = palette()[status];
      if (entry) item.title = entry[1];
    }
  }

  function select(reveal) {
    for (const old of root.querySelectorAll(".kn-selected")) old.classList.remove("kn-selected");
    const aliases = (model.get("graph") || {}).aliases || {};
    const chosen = model.get("selected") || "";
    if (!chosen) return;
    const id = Object.prototype.hasOwnProperty.call(aliases, chosen) ? aliases[chosen] : chosen;
    let target = nodeEls.get(id) || groupEls.get(id);
    let box = boxes.get(id);
    if (!target) {
      // inside a collapsed nested model: mark the model's node
      const parts = id.split("/");
      while (parts.length > 1 && !target) {
        parts.pop();
        const outer = parts.join("/");
        target = nodeEls.get(outer);
        box = boxes.get(outer);
      }
    }
    if (!target) return;
    target.classList.add("kn-selected");
    if (!reveal || !box) return;
    const inside = box.x >= view.x && box.y >= view.y && box.x + box.w <= view.x + view.w &&
      box.y + box.h <= view.y + view.h;
    if (inside && scale() >= LABEL_MIN_SCALE) return;
    setScale(Math.max(scale(), 1.0), box.x + box.w / 2, box.y + Math.min(box.h, 60) / 2);
  }

  // ---- zoom (wheel) and pan (drag) through the viewBox
  function zoomAt(factor, clientX, clientY) {
    const rect = svg.getBoundingClientRect();
    const px = view.x + ((clientX - rect.left) / (rect.width || 1)) * view.w;
    const py = view.y + ((clientY - rect.top) / (rect.height || 1)) * view.h;
    const s = Math.min(Math.max(pixels * factor, 0.005), 8);
    const w = view.w * (pixels / s);
    const h = view.h * (pixels / s);
    view = { x: px - (px - view.x) * (w / view.w), y: py - (py - view.y) * (h / view.h), w, h };
    pixels = s;
    applyView();
  }

  svg.addEventListener("wheel", (event) => {
    event.preventDefault();
    zoomAt(Math.exp(-event.deltaY * 0.0015), event.clientX, event.clientY);
  }, { passive: false });

  let drag = null;
  let moved = false;
  svg.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    drag = { x: event.clientX, y: event.clientY, view: { ...view }, id: event.pointerId };
    moved = false;
  });
  svg.addEventListener("pointermove", (event) => {
    if (!drag) return;
    const dx = event.clientX - drag.x;
    const dy = event.clientY - drag.y;
    if (!moved && Math.abs(dx) + Math.abs(dy) < 4) return;
    if (!moved) {
      moved = true; // only now capture: a click on a node must still reach the node
      svg.setPointerCapture(drag.id);
      root.classList.add("kn-panning");
    }
    const s = scale();
    view = { ...view, x: drag.view.x - dx / s, y: drag.view.y - dy / s };
    applyView();
  });
  const endDrag = () => {
    if (drag && moved) {
      try { svg.releasePointerCapture(drag.id); } catch (e) { /* already released */ }
    }
    drag = null;
    root.classList.remove("kn-panning");
    setTimeout(() => { moved = false; }, 0); // the click that ends a drag selects nothing
  };
  svg.addEventListener("pointerup", endDrag);
  svg.addEventListener("pointercancel", endDrag);

  fit.addEventListener("click", fitAll);
  zoomIn.addEventListener("click", () => setScale(scale() * 1.4, view.x + view.w / 2, view.y + view.h / 2));
  zoomOut.addEventListener("click", () => setScale(scale() / 1.4, view.x + view.w / 2, view.y + view.h / 2));

  const height = model.get("height") || 480;
  svg.style.height = `${height}px`;

  function redraw(first) {
    draw();
    recolor();
    if (first) start();
    select(false);
  }

  let shown = false;
  const onGraph = () => redraw(false);
  const onStatuses = () => recolor();
  const onSelected = () => select(true);
  const onPalette = () => recolor();
  model.on("change:graph", onGraph);
  model.on("change:statuses", onStatuses);
  model.on("change:selected", onSelected);
  model.on("change:palette", onPalette);
  draw();
  recolor();
  select(false);
  // the element has no size until it is in the page; lay out the view once it has
  const observer = new ResizeObserver(() => {
    if (!svg.clientWidth) return;
    if (!shown) {
      shown = true;
      start();
      select(true);
    } else {
      view = { ...view, w: svg.clientWidth / pixels, h: svg.clientHeight / pixels };
      applyView();
    }
  });
  observer.observe(svg);

  return () => {
    observer.disconnect();
    model.off("change:graph", onGraph);
    model.off("change:statuses", onStatuses);
    model.off("change:selected", onSelected);
    model.off("change:palette", onPalette);
  };
}

export default { render };
