// Open positions: live mark price and unrealized P&L (cells flash green/red when they move)
// and a close button (a reduce-only market order on the server).

import { fmtPrice, fmtSigned, h, reconcile, setNumber, setSign, setText } from "../dom.js";

export function mount(root, { store, api, notify }) {
  const body = root.querySelector('[data-testid="positions"]');
  const cols = ["symbol", "side", "quantity", "entry", "mark", "upnl", "liq", "bot"];

  function create(p) {
    const close = h("button", { type: "button", class: "small danger", dataset: { testid: "position-close" } }, "Close");
    close.addEventListener("click", async () => {
      close.disabled = true;
      try {
        await api.closePosition(p.id);
      } catch (err) {
        notify(`Could not close the position: ${err.message}`, "error");
        close.disabled = false;
      }
    });
    const num = new Set(["quantity", "entry", "mark", "upnl", "liq"]);
    return h("tr", { dataset: { testid: "position-row", positionId: p.id } },
      ...cols.map((c) => h("td", { class: num.has(c) ? "num" : null, dataset: { testid: `position-${c}` } })),
      h("td", { class: "actions" }, close));
  }

  function update(tr, p) {
    const cell = (c) => tr.querySelector(`[data-testid="position-${c}"]`);
    setText(cell("symbol"), p.symbol);
    setText(cell("side"), p.side);
    cell("side").className = p.side;
    setText(cell("quantity"), `${p.quantity}${p.leverage > 1 ? ` ×${p.leverage}` : ""}`);
    setText(cell("entry"), fmtPrice(p.entry_price));
    setNumber(cell("mark"), p.mark_price, fmtPrice(p.mark_price));
    setNumber(cell("upnl"), p.unrealized_pnl, fmtSigned(p.unrealized_pnl));
    setSign(cell("upnl"), p.unrealized_pnl);
    setText(cell("liq"), fmtPrice(p.liquidation_price));
    setText(cell("bot"), p.bot_id ? (store.get("bots", p.bot_id)?.name ?? p.bot_id) : "manual");
  }

  return {
    topics: ["positions", "bots"],
    render() {
      const open = store.rows("positions").filter((p) => p.status === "open").sort((a, b) => b.opened_at - a.opened_at);
      reconcile(body, open, {
        key: (p) => p.id,
        create,
        update,
        empty: () => h("tr", { class: "empty" }, h("td", { colspan: cols.length + 1 }, "No open positions.")),
      });
    },
  };
}
