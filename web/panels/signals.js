// The signals feed: the newest strategy signals first, with bot, direction and confidence.

import { fmtTime, h, reconcile } from "../dom.js";

const SHOWN = 40;

export function mount(root, { store }) {
  const list = root.querySelector('[data-testid="signals"]');
  return {
    topics: ["signals", "bots"],
    render() {
      const signals = store.rows("signals").sort((a, b) => b.ts - a.ts || (a.id < b.id ? 1 : -1)).slice(0, SHOWN);
      reconcile(list, signals, {
        key: (s) => s.id,
        create: (s) => h("li", { dataset: { testid: "signal-row", signalId: s.id } },
          h("time", {}, fmtTime(s.ts)),
          h("span", { class: `pill ${s.direction}` }, s.direction),
          h("span", { class: "sig-symbol" }, s.symbol),
          h("span", { class: "muted" }, `${store.get("bots", s.bot_id)?.name ?? s.bot_id ?? "manual"} · ${Math.round(Number(s.confidence) * 100)}%`),
          h("span", { class: "reason", title: s.reason }, s.reason)),
        update: () => {},
        empty: () => h("li", { class: "empty" }, "No signals yet."),
      });
    },
  };
}
