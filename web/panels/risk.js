// The circuit-breaker panel: one row per portfolio's risk row — breaker state, daily P&L
// against its loss limit, drawdown against the maximum, and why it tripped.

import { fmtMoney, fmtSigned, fmtTime, h, reconcile, setSign, setText } from "../dom.js";

export function mount(root, { store }) {
  const list = root.querySelector('[data-testid="risk"]');

  function create(r) {
    return h("article", { class: "risk", dataset: { testid: "risk-row", riskId: r.id } },
      h("div", { class: "risk-head" }, h("strong", { dataset: { testid: "risk-portfolio" } }),
        h("span", { class: "pill", dataset: { testid: "risk-breaker" } })),
      h("dl", { class: "kv" },
        h("dt", {}, "Daily P&L / limit"), h("dd", { class: "num", dataset: { testid: "risk-daily" } }),
        h("dt", {}, "Drawdown / max"), h("dd", { class: "num", dataset: { testid: "risk-drawdown" } })),
      h("p", { class: "trip", dataset: { testid: "risk-reason" } }));
  }

  function update(el, r) {
    setText(el.querySelector('[data-testid="risk-portfolio"]'), store.get("portfolios", r.portfolio_id)?.name ?? r.portfolio_id);
    const breaker = el.querySelector('[data-testid="risk-breaker"]');
    setText(breaker, r.circuit_breaker);
    breaker.className = `pill ${r.circuit_breaker}`;
    const daily = el.querySelector('[data-testid="risk-daily"]');
    setText(daily, `${fmtSigned(r.daily_pnl)} / -${fmtMoney(r.daily_loss_limit)}`);
    setSign(daily, r.daily_pnl);
    const pct = (v) => `${(Number(v) * 100).toFixed(2)}%`;
    setText(el.querySelector('[data-testid="risk-drawdown"]'), `${pct(r.drawdown)} / ${pct(r.max_drawdown)}`);
    const reason = el.querySelector('[data-testid="risk-reason"]');
    setText(reason, r.circuit_breaker === "tripped" ? `Tripped ${fmtTime(r.tripped_at)}: ${r.trip_reason ?? "—"}` : "");
    el.classList.toggle("tripped", r.circuit_breaker === "tripped");
  }

  return {
    topics: ["risk", "portfolios"],
    render() {
      reconcile(list, store.rows("risk"), {
        key: (r) => r.id,
        create,
        update,
        empty: () => h("p", { class: "empty" }, "No risk rows."),
      });
    },
  };
}
