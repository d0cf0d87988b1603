// Portfolio cards: balance, equity, unrealized and realized P&L, margin used and available
// (with a usage bar).

import { fmtMoney, fmtSigned, h, reconcile, setNumber, setSign, setText } from "../dom.js";

export function mount(root, { store }) {
  const list = root.querySelector('[data-testid="portfolios"]');
  const fields = [
    ["balance", "Balance", fmtMoney],
    ["equity", "Equity", fmtMoney],
    ["unrealized_pnl", "Unrealized", fmtSigned],
    ["realized_pnl", "Realized", fmtSigned],
    ["margin_used", "Margin used", fmtMoney],
    ["margin_available", "Available", fmtMoney],
  ];

  function create(p) {
    return h("article", { class: "portfolio", dataset: { testid: "portfolio", portfolioId: p.id } },
      h("div", { class: "portfolio-head" }, h("strong", { dataset: { testid: "portfolio-name" } }), " ",
        h("span", { class: "muted", dataset: { testid: "portfolio-currency" } })),
      h("dl", { class: "kv" }, ...fields.flatMap(([col, label]) => [
        h("dt", {}, label), h("dd", { class: "num", dataset: { testid: `portfolio-${col.replace(/_/g, "-")}` } })])),
      h("div", { class: "bar", title: "margin used" }, h("span")));
  }

  function update(el, p) {
    setText(el.querySelector('[data-testid="portfolio-name"]'), p.name);
    setText(el.querySelector('[data-testid="portfolio-currency"]'), p.currency);
    for (const [col, , fmt] of fields) {
      const cell = el.querySelector(`[data-testid="portfolio-${col.replace(/_/g, "-")}"]`);
      setNumber(cell, p[col], fmt(p[col]));
      if (col.endsWith("pnl")) setSign(cell, p[col]);
    }
    const used = Number(p.margin_used) || 0;
    const total = used + (Number(p.margin_available) || 0);
    el.querySelector(".bar > span").style.width = `${total > 0 ? Math.min(100, (100 * used) / total) : 0}%`;
  }

  return {
    topics: ["portfolios"],
    render() {
      reconcile(list, store.rows("portfolios"), {
        key: (p) => p.id,
        create,
        update,
        empty: () => h("p", { class: "empty" }, "No portfolios."),
      });
    },
  };
}
