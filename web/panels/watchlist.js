// The market watchlist: a live ticker row per symbol the market source serves (public
// `ticker:<SYMBOL>` topics on the shared connection). Clicking a row selects the symbol.

import { fmtPrice, h, reconcile, schedule, setNumber, setText } from "../dom.js";

export function mount(root, { tw, api, notify, onSelect }) {
  const body = root.querySelector('[data-testid="watchlist"]');
  const tickers = new Map();
  let symbols = [];
  let selected = null;

  function render() {
    reconcile(body, symbols, {
      key: (s) => s,
      create: (s) => {
        const tr = h("tr", { class: "clickable", dataset: { testid: "ticker-row", symbol: s } },
          h("td", { class: "sym" }, s),
          h("td", { class: "num", dataset: { testid: "ticker-last" } }),
          h("td", { class: "num muted", dataset: { testid: "ticker-bid" } }),
          h("td", { class: "num muted", dataset: { testid: "ticker-ask" } }));
        tr.addEventListener("click", () => select(s));
        return tr;
      },
      update: (tr, s) => {
        const t = tickers.get(s);
        setNumber(tr.querySelector('[data-testid="ticker-last"]'), t?.last, fmtPrice(t?.last));
        setText(tr.querySelector('[data-testid="ticker-bid"]'), fmtPrice(t?.bid));
        setText(tr.querySelector('[data-testid="ticker-ask"]'), fmtPrice(t?.ask));
        tr.classList.toggle("selected", s === selected);
      },
      empty: () => h("tr", { class: "empty" }, h("td", { colspan: 4 }, "Loading symbols…")),
    });
  }

  function select(s) {
    selected = s;
    schedule(render);
    onSelect?.(s);
  }

  async function start() {
    try {
      symbols = (await api.symbols()).map((i) => i.symbol);
    } catch (err) {
      notify(`Could not load the market symbols: ${err.message}`, "error");
      return;
    }
    if (!symbols.length) return;
    const sub = tw.subscribe(symbols.map((s) => `ticker:${s}`));
    sub.on("market", (f) => {
      tickers.set(f.topic.slice("ticker:".length), f.data);
      schedule(render);
    });
    sub.on("error", (f) => notify(`Market data: ${f.message ?? f.code}`, "error"));
    select(symbols.includes("BTCUSDT") ? "BTCUSDT" : symbols[0]);
  }

  render();
  start();
  return { select };
}
