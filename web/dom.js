// DOM helpers shared by the panels: one render pass per animation frame, keyed list
// reconciliation, number formatting and the flash effects. No state lives here.

const dirty = new Set();
let frame = 0;

/** Run `render` in the next animation frame; several requests in one frame run it once. */
export function schedule(render) {
  dirty.add(render);
  if (!frame) frame = requestAnimationFrame(flush);
}

function flush() {
  frame = 0;
  const renders = [...dirty];
  dirty.clear();
  for (const render of renders) {
    try {
      render();
    } catch (err) {
      console.error("render failed", err);
    }
  }
}

/** `h("td", {class: "num", dataset: {testid: "x"}}, "text", child)`: a new element. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  el.append(...children.filter((c) => c != null));
  return el;
}

/** Set `el`'s text only when it changed (no layout work otherwise); true if it changed. */
export function setText(el, text) {
  const s = String(text);
  if (el.textContent === s) return false;
  el.textContent = s;
  return true;
}

/**
 * Make `container`'s children one element per item, in order, keyed by `key(item)`:
 * `create(item)` builds a new element, `update(el, item)` refreshes an existing one.
 * Elements of items that are gone are removed. `empty` is shown when there are no items.
 */
export function reconcile(container, items, { key, create, update, empty = null }) {
  const existing = new Map();
  for (const el of container.children) if (el.dataset.key != null) existing.set(el.dataset.key, el);
  let prev = null;
  for (const item of items) {
    const k = String(key(item));
    let el = existing.get(k);
    if (el) existing.delete(k);
    else {
      el = create(item);
      el.dataset.key = k;
    }
    update(el, item);
    const next = prev ? prev.nextSibling : container.firstChild;
    if (next !== el) container.insertBefore(el, next);
    prev = el;
  }
  for (const el of existing.values()) el.remove();
  for (const el of [...container.children]) if (el.dataset.key == null) el.remove();
  if (!items.length && empty) container.append(empty());
}

/** Restart the CSS animation `cls` on `el` (a brief highlight). */
export function flash(el, cls) {
  el.classList.remove("flash", "flash-up", "flash-down");
  void el.offsetWidth; // restart the animation when the class is re-added
  el.classList.add(cls);
}

/** Remove flash classes once their animation has ended (installed once per page). */
export function installFlashCleanup(root = document) {
  root.addEventListener("animationend", (e) => {
    if (/^flash/.test(e.animationName)) e.target.classList.remove("flash", "flash-up", "flash-down");
  });
}

/** Set a numeric cell and flash it green/red when its value went up/down. */
export function setNumber(el, value, text) {
  const before = el.dataset.value;
  if (!setText(el, text)) return;
  el.dataset.value = value ?? "";
  if (before == null || before === "" || value == null) return;
  const a = Number(before);
  const b = Number(value);
  if (b > a) flash(el, "flash-up");
  else if (b < a) flash(el, "flash-down");
}

const money = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });

/** "12,345.67" from a decimal string or number; "—" for nothing. */
export function fmtMoney(v) {
  if (v == null || v === "") return "—";
  const n = Number(v);
  return Number.isFinite(n) ? money.format(n) : String(v);
}

/** Like fmtMoney with an explicit sign: "+12.30", "-4.00". */
export function fmtSigned(v) {
  if (v == null || v === "") return "—";
  const n = Number(v);
  if (!Number.isFinite(n)) return String(v);
  const text = money.format(n);
  if (/^-?0\.00$/.test(text)) return "0.00"; // no "-0.00" for a value that rounds to zero
  return (n > 0 ? "+" : "") + text;
}

/** A decimal string as it came (prices keep their tick precision). */
export function fmtPrice(v) {
  return v == null || v === "" ? "—" : String(v);
}

/** "pos"/"neg"/"" for colouring a signed value. */
export function signClass(v) {
  const n = Number(v);
  return n > 0 ? "pos" : n < 0 ? "neg" : "";
}

/** Set `el`'s sign class (pos/neg) from `v`. */
export function setSign(el, v) {
  el.classList.toggle("pos", Number(v) > 0);
  el.classList.toggle("neg", Number(v) < 0);
}

/** "14:03:07" for a ms timestamp. */
export function fmtTime(ms) {
  if (!ms) return "—";
  return new Date(ms).toLocaleTimeString("en-GB", { hour12: false });
}

/** Sum of a decimal column over rows, as a number. */
export function sum(rows, col) {
  return rows.reduce((acc, r) => acc + (Number(r[col]) || 0), 0);
}
