// Acceptance 3: pausing a bot with its button changes its card (status and a flash), and
// the simulator stops opening positions for it.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawnApp, waitFor } from "./helpers.mjs";

let app;
before(async () => (app = await spawnApp()));
after(() => app?.close());

const BOT = "bot_alice_1";
const card = (page) => page.locator(`[data-bot-id="${BOT}"]`);

test("the pause button pauses the bot, its card flashes, and it opens no more positions", async () => {
  const { server } = app;
  const token = await server.token("alice");
  const signal = (direction) => server.api(token, "POST", "/v1/testing/simulate-signal", { bot_id: BOT, direction });
  const openPositions = async () => (await server.api(token, "GET", `/v1/positions?bot_id=${BOT}&status=open`)).items;
  const rowsOnPage = (page) => page.locator('[data-testid="position-row"]', { hasText: "Momentum BTC" }).count();

  const page = await app.login("alice");
  await card(page).waitFor();
  assert.equal(await card(page).getByTestId("bot-status").textContent(), "running");

  // Control: while running, a long signal opens a position, and the page shows it.
  await signal("flat");
  await signal("long");
  await waitFor(async () => (await openPositions()).length > 0, { what: "a position for the running bot" });
  await waitFor(async () => (await rowsOnPage(page)) > 0, { what: "its row on the page" });

  // Record every class the card gets from now on (the flash lasts about a second).
  await card(page).evaluate((el) => {
    window.__cardClasses = new Set();
    new MutationObserver(() => el.classList.forEach((c) => window.__cardClasses.add(c))).observe(el, { attributes: true, attributeFilter: ["class"] });
  });
  await card(page).getByTestId("bot-pause").click();
  await page.waitForFunction(
    (id) => document.querySelector(`[data-bot-id="${id}"] [data-testid="bot-status"]`)?.textContent === "paused",
    BOT,
    { timeout: 5000 },
  );
  assert.ok(await page.evaluate(() => window.__cardClasses.has("flash")), "the card flashed on the status change");
  assert.equal(await card(page).getByTestId("bot-pause").isDisabled(), true);
  assert.equal(await card(page).getByTestId("bot-start").isDisabled(), false);

  // Paused: flatten (closing is still allowed), then a long signal opens nothing.
  await signal("flat");
  await waitFor(async () => (await openPositions()).length === 0, { what: "the bot's position to close" });
  await waitFor(async () => (await rowsOnPage(page)) === 0, { what: "its row to leave the page" });
  const sig = await signal("long");
  // The simulator acted on the signal: it recorded why it did not open.
  const lifecycle = (await server.api(token, "GET", `/v1/lifecycle?entity_id=${BOT}&event=open_skipped`)).items;
  const skipped = lifecycle.find((l) => l.detail?.signal_id === sig.id);
  assert.ok(skipped, `an open_skipped entry for signal ${sig.id}`);
  assert.equal(skipped.detail.reason, "bot_paused");
  assert.deepEqual(await openPositions(), [], "no open position for the paused bot");
  // The page agrees after the lifecycle row of that signal has reached it.
  await page.waitForFunction((id) => window.tradewire.sub.store.get("lifecycle", id) != null, skipped.id, { timeout: 5000 });
  assert.equal(await rowsOnPage(page), 0);
  assert.deepEqual(app.pageErrors, []);
});
