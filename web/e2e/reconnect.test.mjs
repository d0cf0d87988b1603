// Acceptance 4: stop the server and the indicator turns red within two heartbeat intervals;
// change rows while it is down; start it again on the same port and data dir and the
// indicator turns green with every missed change on the page — nothing missing, nothing
// doubled.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawnApp, waitFor, waitForState } from "./helpers.mjs";

const HEARTBEAT_MS = 1000;
let app;
before(async () => (app = await spawnApp({ env: { TRADEWIRE_HEARTBEAT_MS: String(HEARTBEAT_MS) } })));
after(() => app?.close());

test("after a server restart the page catches up on every change it missed", async () => {
  const { server } = app;
  const page = await app.login("alice");
  await page.getByTestId("bot-card").nth(2).waitFor();
  await page.evaluate(() => (window.__noReload = true));

  const stopping = server.stop();
  const stoppedAt = Date.now();
  await waitForState(page, "offline", 2 * HEARTBEAT_MS);
  const redAfter = Date.now() - stoppedAt;
  await stopping;

  // Changes while the server is down, through the database file itself.
  server.sql(`
    UPDATE trading_bots SET name = 'Renamed while down' WHERE id = 'bot_alice_2';
    DELETE FROM trading_bots WHERE id = 'bot_alice_3';
    UPDATE risk SET daily_loss_limit = '777' WHERE id = 'risk_alice_main';
    INSERT INTO signals(id, user_id, bot_id, symbol, direction, confidence, reason, ts)
      VALUES ('sig_e2e_down', 'u_alice', 'bot_alice_1', 'BTCUSDT', 'short', '0.42', 'written while the server was down', 1);
  `);

  await server.start();
  // The client backs off (full jitter, 1 s doubling) while the server is down.
  await waitForState(page, "live", 40_000);

  const bot2 = page.locator('[data-bot-id="bot_alice_2"] [data-testid="bot-name"]');
  await page.waitForFunction(
    () => document.querySelector('[data-bot-id="bot_alice_2"] [data-testid="bot-name"]')?.textContent === "Renamed while down" &&
      !document.querySelector('[data-bot-id="bot_alice_3"]') &&
      window.tradewire.sub.store.get("signals", "sig_e2e_down") != null,
    null,
    { timeout: 5000 },
  );
  assert.equal(await bot2.textContent(), "Renamed while down");
  assert.equal(await page.getByTestId("bot-card").count(), 2, "the deleted bot is gone");
  assert.match(await page.getByTestId("risk-daily").textContent(), /-777\.00/);

  // Nothing doubled in the DOM.
  for (const [testid, attr] of [["bot-card", "botId"], ["signal-row", "signalId"], ["position-row", "positionId"], ["order-row", "orderId"], ["fill-row", "fillId"]]) {
    const ids = await page.getByTestId(testid).evaluateAll((els, a) => els.map((e) => e.dataset[a]), attr);
    assert.equal(new Set(ids).size, ids.length, `no duplicate ${testid}`);
  }
  // Nothing missing: the page's rows are the server's rows.
  const token = await server.token("alice");
  const byId = (rows) => [...rows].sort((a, b) => a.id.localeCompare(b.id));
  const pageRows = (topic) => page.evaluate((t) => window.tradewire.sub.store.rows(t), topic);
  assert.deepEqual(byId(await pageRows("bots")), byId((await server.api(token, "GET", "/v1/bots")).items));
  const signalIds = (await server.api(token, "GET", "/v1/signals?limit=1000")).items.map((s) => s.id);
  await waitFor(async () => {
    const have = new Set((await pageRows("signals")).map((s) => s.id));
    return signalIds.every((id) => have.has(id));
  }, { timeoutMs: 5000, what: "every signal the server has to be on the page" });
  assert.equal((await page.getByTestId("signal-row").evaluateAll((els) => els.filter((e) => e.dataset.signalId === "sig_e2e_down").length)), 1, "the signal written while down is listed once");

  assert.ok(redAfter <= 2 * HEARTBEAT_MS, `red after ${redAfter} ms`);
  assert.equal(await page.evaluate(() => window.__noReload), true, "the page was not reloaded");
  assert.deepEqual(app.pageErrors, []);
});
