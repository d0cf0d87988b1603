// The stats cards: active bots, total equity, today's P&L (the risk rows' daily P&L) and
// open positions, all derived from the live rows.

import { fmtMoney, fmtSigned, setSign, setText, sum } from "../dom.js";

export function mount(root, { store }) {
  const q = (id) => root.querySelector(`[data-testid="${id}"]`);
  const bots = q("stat-active-bots");
  const equity = q("stat-equity");
  const today = q("stat-pnl-today");
  const positions = q("stat-open-positions");
  return {
    topics: ["bots", "portfolios", "risk", "positions"],
    render() {
      const allBots = store.rows("bots");
      setText(bots, `${allBots.filter((b) => b.status === "running").length} / ${allBots.length}`);
      setText(equity, fmtMoney(sum(store.rows("portfolios"), "equity")));
      const daily = sum(store.rows("risk"), "daily_pnl");
      setText(today, fmtSigned(daily));
      setSign(today, daily);
      setText(positions, String(store.rows("positions").filter((p) => p.status === "open").length));
    },
  };
}
