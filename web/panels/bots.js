// Bot cards: status, strategy, symbol, P&L from the bot's positions, and start/pause/stop
// buttons. A card flashes when its status changes; the new status arrives over the stream
// (the buttons do not guess it).

import { flash, fmtSigned, h, reconcile, setSign, setText } from "../dom.js";

const ACTIONS = ["start", "pause", "stop"];
/** Which actions make sense in each status (the server also refuses pausing a stopped bot). */
const ENABLED = {
  running: { start: false, pause: true, stop: true },
  paused: { start: true, pause: false, stop: true },
  stopped: { start: true, pause: false, stop: false },
};

export function mount(root, { store, api, notify }) {
  const list = root.querySelector('[data-testid="bots"]');

  async function command(card, id, action) {
    card.classList.add("busy");
    try {
      await api.botCommand(id, action);
    } catch (err) {
      notify(`Could not ${action} the bot: ${err.message}`, "error");
    } finally {
      card.classList.remove("busy");
    }
  }

  function create(bot) {
    const card = h("article", { class: "bot card", dataset: { testid: "bot-card", botId: bot.id } },
      h("div", { class: "bot-head" },
        h("span", { class: "bot-name", dataset: { testid: "bot-name" } }),
        h("span", { class: "pill", dataset: { testid: "bot-status" } })),
      h("div", { class: "bot-meta" },
        h("span", { dataset: { testid: "bot-strategy" } }), " · ",
        h("span", { dataset: { testid: "bot-symbol" } })),
      h("div", { class: "bot-pnl" }, h("span", { class: "label" }, "P&L "),
        h("span", { class: "num", dataset: { testid: "bot-pnl" } })),
      h("div", { class: "bot-actions" },
        ...ACTIONS.map((a) => h("button", { type: "button", class: `small ${a}`, dataset: { testid: `bot-${a}`, action: a } }, a))));
    card.querySelector(".bot-actions").addEventListener("click", (e) => {
      const action = e.target.closest("button")?.dataset.action;
      if (action) command(card, card.dataset.botId, action);
    });
    return card;
  }

  function update(card, { bot, pnl }) {
    const q = (id) => card.querySelector(`[data-testid="${id}"]`);
    setText(q("bot-name"), bot.name);
    setText(q("bot-strategy"), bot.strategy.replace(/_/g, " "));
    setText(q("bot-symbol"), bot.symbol);
    const pnlEl = q("bot-pnl");
    setText(pnlEl, pnl == null ? "—" : fmtSigned(pnl));
    setSign(pnlEl, pnl);
    const status = q("bot-status");
    if (setText(status, bot.status)) {
      status.className = `pill ${bot.status}`;
      if (card.dataset.status) flash(card, "flash");
    }
    card.dataset.status = bot.status;
    const enabled = ENABLED[bot.status] ?? {};
    for (const b of card.querySelectorAll("button")) b.disabled = !enabled[b.dataset.action];
  }

  return {
    topics: ["bots", "positions"],
    render() {
      const pnlByBot = new Map();
      for (const p of store.rows("positions")) {
        if (!p.bot_id) continue;
        const v = (Number(p.realized_pnl) || 0) + (p.status === "open" ? Number(p.unrealized_pnl) || 0 : 0);
        pnlByBot.set(p.bot_id, (pnlByBot.get(p.bot_id) ?? 0) + v);
      }
      const bots = store.rows("bots").sort((a, b) => a.created_at - b.created_at || a.id.localeCompare(b.id));
      reconcile(list, bots.map((bot) => ({ bot, pnl: pnlByBot.get(bot.id) ?? null })), {
        key: ({ bot }) => bot.id,
        create: ({ bot }) => create(bot),
        update,
        empty: () => h("p", { class: "empty" }, "No bots yet."),
      });
    },
  };
}
