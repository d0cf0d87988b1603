// Acceptance 2: a row changed through a separate database connection appears in the page
// within one second, without a reload.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawnApp } from "./helpers.mjs";

let app;
before(async () => (app = await spawnApp()));
after(() => app?.close());

test("a bot renamed in the sqlite3 shell is on the page within one second", async () => {
  const page = await app.login("alice");
  const name = page.locator('[data-bot-id="bot_alice_1"] [data-testid="bot-name"]');
  await name.waitFor();
  assert.equal(await name.textContent(), "Momentum BTC");
  // Any reload would lose this marker.
  await page.evaluate(() => (window.__noReload = true));

  app.server.sql("UPDATE trading_bots SET name = 'Renamed' WHERE id = 'bot_alice_1'");
  const changedAt = Date.now();
  await page.waitForFunction(
    () => document.querySelector('[data-bot-id="bot_alice_1"] [data-testid="bot-name"]')?.textContent === "Renamed",
    null,
    { timeout: 1000, polling: "raf" },
  );
  const elapsed = Date.now() - changedAt;
  assert.ok(elapsed <= 1000, `shown after ${elapsed} ms`);
  assert.equal(await page.evaluate(() => window.__noReload), true, "the page was not reloaded");
  assert.equal(await page.getByTestId("bot-card").count(), 3);
});
