// Charts (TradingView Lightweight Charts, vendored under /vendor/): live 1-minute candles of
// the selected symbol (GET /v1/market/{symbol}/klines, then `kline:<SYMBOL>:1m`) with the
// user's fills as markers, and the equity curve from the `pnl` rows.

import {
  CandlestickSeries,
  ColorType,
  LineSeries,
  createChart,
  createSeriesMarkers,
} from "/vendor/lightweight-charts.standalone.production.mjs";
import { schedule, setText } from "../dom.js";

const THEME = {
  layout: { background: { type: ColorType.Solid, color: "#161b22" }, textColor: "#8b949e", attributionLogo: true },
  grid: { vertLines: { color: "#21262d" }, horzLines: { color: "#21262d" } },
  timeScale: { timeVisible: true, secondsVisible: false, borderColor: "#2d333b" },
  rightPriceScale: { borderColor: "#2d333b" },
  autoSize: true,
};

const sec = (ms) => Math.floor(ms / 1000);
const candle = (k) => ({ time: sec(k.open_time), open: +k.open, high: +k.high, low: +k.low, close: +k.close });

export function mount(root, { tw, api, store, notify }) {
  const candleBox = root.querySelector('[data-testid="chart-candles"]');
  const equityBox = root.querySelector('[data-testid="chart-equity"]');
  const title = root.querySelector('[data-testid="chart-symbol"]');
  candleBox.replaceChildren();
  equityBox.replaceChildren();

  const candleChart = createChart(candleBox, THEME);
  const candles = candleChart.addSeries(CandlestickSeries, {
    upColor: "#2ea043", downColor: "#da3633", borderVisible: false, wickUpColor: "#2ea043", wickDownColor: "#da3633",
  });
  const markers = createSeriesMarkers(candles, []);
  const equityChart = createChart(equityBox, THEME);
  const equity = equityChart.addSeries(LineSeries, { color: "#388bfd", lineWidth: 2 });

  let symbol = null;
  let klineSub = null;
  let loadGen = 0;
  let lastCandle = 0;

  function renderMarkers() {
    if (!symbol) return;
    const fills = store.rows("fills").filter((f) => f.symbol === symbol).sort((a, b) => a.ts - b.ts).slice(-200);
    markers.setMarkers(fills.map((f) => ({
      time: sec(f.ts - (f.ts % 60_000)),
      position: f.side === "buy" ? "belowBar" : "aboveBar",
      color: f.side === "buy" ? "#3fb950" : "#f85149",
      shape: f.side === "buy" ? "arrowUp" : "arrowDown",
      text: `${f.side} ${f.quantity}`,
    })));
  }

  function renderEquity() {
    // Total equity per second over all portfolios' pnl rows.
    const byPortfolio = new Map();
    const points = new Map();
    for (const r of store.rows("pnl").sort((a, b) => a.ts - b.ts)) {
      byPortfolio.set(r.portfolio_id, Number(r.equity) || 0);
      let total = 0;
      for (const v of byPortfolio.values()) total += v;
      points.set(sec(r.ts), total);
    }
    equity.setData([...points].map(([time, value]) => ({ time, value })));
  }

  async function select(next) {
    if (next === symbol) return;
    symbol = next;
    setText(title, next);
    const gen = ++loadGen;
    klineSub?.unsubscribe();
    klineSub = null;
    lastCandle = 0;
    candles.setData([]);
    let history = [];
    try {
      history = await api.klines(next);
    } catch (err) {
      notify(`Could not load ${next} candles: ${err.message}`, "error");
    }
    if (gen !== loadGen) return;
    const data = history.map(candle);
    candles.setData(data);
    lastCandle = data.at(-1)?.time ?? 0;
    renderMarkers();
    candleChart.timeScale().fitContent();
    klineSub = tw.subscribe([`kline:${next}:1m`]);
    klineSub.on("market", (f) => {
      if (gen !== loadGen) return;
      const c = candle(f.data);
      if (c.time < lastCandle) return; // older than what is drawn
      lastCandle = c.time;
      candles.update(c);
    });
  }

  return {
    topics: ["fills", "pnl"],
    render() {
      renderMarkers();
      renderEquity();
    },
    select,
    schedule: () => schedule(renderEquity),
  };
}
