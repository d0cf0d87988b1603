// Open orders with a cancel button, and the most recent fills. Clicking an order shows its
// lifecycle timeline and the other orders of its chain (entry, take-profit, stop-loss).

import { fmtMoney, fmtPrice, fmtSigned, fmtTime, h, reconcile, setSign, setText } from "../dom.js";

const OPEN = new Set(["new", "partially_filled", "triggered"]);
const RECENT_FILLS = 30;

export function mount(root, { store, api, notify }) {
  const ordersBody = root.querySelector('[data-testid="orders"]');
  const fillsBody = root.querySelector('[data-testid="fills"]');
  let expanded = null; // the order id whose timeline is shown

  function createOrder(o) {
    const cancel = h("button", { type: "button", class: "small", dataset: { testid: "order-cancel" } }, "Cancel");
    cancel.addEventListener("click", async (e) => {
      e.stopPropagation();
      cancel.disabled = true;
      try {
        await api.cancelOrder(o.id);
      } catch (err) {
        notify(`Could not cancel the order: ${err.message}`, "error");
        cancel.disabled = false;
      }
    });
    const tr = h("tr", { class: "clickable", dataset: { testid: "order-row", orderId: o.id }, title: "Show lifecycle" },
      ...["time", "symbol", "side", "type", "price", "filled", "status", "chain"].map((c) =>
        h("td", { class: c === "price" || c === "filled" ? "num" : null, dataset: { testid: `order-${c}` } })),
      h("td", { class: "actions" }, cancel));
    tr.addEventListener("click", () => {
      expanded = expanded === o.id ? null : o.id;
      render();
    });
    return tr;
  }

  function updateOrder(tr, o) {
    const cell = (c) => tr.querySelector(`[data-testid="order-${c}"]`);
    setText(cell("time"), fmtTime(o.created_at));
    setText(cell("symbol"), o.symbol);
    setText(cell("side"), o.side);
    cell("side").className = o.side;
    setText(cell("type"), o.type.replace(/_/g, " "));
    setText(cell("price"), fmtPrice(o.price ?? o.stop_price));
    setText(cell("filled"), `${o.filled_quantity} / ${o.quantity}`);
    setText(cell("status"), o.status.replace(/_/g, " "));
    setText(cell("chain"), o.chain_role ? o.chain_role.replace(/_/g, "-") : "");
  }

  function fillTimeline(tr, o) {
    const chain = o.chain_id ? store.rows("orders").filter((x) => x.chain_id === o.chain_id) : [o];
    const ids = new Set(chain.map((x) => x.id));
    const events = store.rows("lifecycle").filter((l) => ids.has(l.entity_id) || l.entity_id === o.chain_id)
      .sort((a, b) => a.ts - b.ts);
    tr.replaceChildren(h("td", { colspan: 9 },
      chain.length > 1 ? h("div", { class: "chain" }, "Chain: ",
        ...chain.map((x) => h("span", { class: "pill" }, `${x.chain_role ?? "order"} ${x.status.replace(/_/g, " ")}`))) : null,
      h("ol", { class: "timeline" }, ...(events.length ? events.map((l) =>
        h("li", {}, h("time", {}, fmtTime(l.ts)), " ", l.event.replace(/_/g, " "))) : [h("li", {}, "No lifecycle events yet.")]))));
  }

  function renderOrders() {
    const open = store.rows("orders").filter((o) => OPEN.has(o.status)).sort((a, b) => b.created_at - a.created_at);
    const items = [];
    for (const o of open) {
      items.push({ kind: "order", o });
      if (expanded === o.id) items.push({ kind: "detail", o });
    }
    reconcile(ordersBody, items, {
      key: ({ kind, o }) => `${kind}:${o.id}`,
      create: ({ kind, o }) => (kind === "order" ? createOrder(o) : h("tr", { class: "detail", dataset: { testid: "order-detail" } })),
      update: (el, { kind, o }) => (kind === "order" ? updateOrder(el, o) : fillTimeline(el, o)),
      empty: () => h("tr", { class: "empty" }, h("td", { colspan: 9 }, "No open orders.")),
    });
  }

  function renderFills() {
    const fills = store.rows("fills").sort((a, b) => b.ts - a.ts).slice(0, RECENT_FILLS);
    reconcile(fillsBody, fills, {
      key: (f) => f.id,
      create: (f) => h("tr", { dataset: { testid: "fill-row", fillId: f.id } },
        h("td", {}, fmtTime(f.ts)), h("td", {}, f.symbol), h("td", { class: f.side }, f.side),
        h("td", { class: "num" }, fmtPrice(f.price)), h("td", { class: "num" }, f.quantity),
        h("td", { class: "num" }, fmtMoney(f.fee)), h("td", { class: "num realized" }, fmtSigned(f.realized_pnl))),
      update: (tr, f) => setSign(tr.querySelector(".realized"), f.realized_pnl),
      empty: () => h("tr", { class: "empty" }, h("td", { colspan: 7 }, "No fills yet.")),
    });
  }

  function render() {
    renderOrders();
    renderFills();
  }

  return { topics: ["orders", "fills", "lifecycle"], render };
}
