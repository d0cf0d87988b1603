// Acceptance 1: logged in as alice, the page shows her bots, portfolio and positions only.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawnApp, texts, waitFor } from "./helpers.mjs";

let app;
before(async () => (app = await spawnApp()));
after(() => app?.close());

test("alice sees her own bots, portfolio and positions, and nothing of bob's", async () => {
  const { server } = app;
  const alice = await server.token("alice");
  const bob = await server.token("bob");
  // Both users get an open position right now (bot_alice_1 and bob's running bot_bob_4).
  await server.api(alice, "POST", "/v1/testing/simulate-signal", { bot_id: "bot_alice_1", direction: "long" });
  await server.api(bob, "POST", "/v1/testing/simulate-signal", { bot_id: "bot_bob_4", direction: "long" });
  const bobPositions = (await server.api(bob, "GET", "/v1/positions?status=open")).items.map((p) => p.id);
  assert.ok(bobPositions.length > 0, "bob has an open position to leak");

  const page = await app.login("alice");

  await page.getByTestId("bot-card").nth(2).waitFor();
  const names = await texts(page, "bot-name");
  assert.deepEqual(names.sort(), ["ETH Mean Revert", "Momentum BTC", "SOL Grid"]);
  for (const bobs of ["Bob's BTC Grid", "Bob's ETH Trend"]) {
    assert.equal(await page.getByText(bobs).count(), 0, `${bobs} is not on alice's page`);
  }

  const portfolios = await page.getByTestId("portfolio").evaluateAll((els) => els.map((e) => e.dataset.portfolioId));
  assert.deepEqual(portfolios, ["pf_alice_main"]);

  // Her open positions, exactly as the API lists them for her; none of bob's.
  const shown = () => page.getByTestId("position-row").evaluateAll((els) => els.map((e) => e.dataset.positionId).sort());
  await page.getByTestId("position-row").first().waitFor({ timeout: 10_000 });
  const mine = async () => (await server.api(alice, "GET", "/v1/positions?status=open")).items.map((p) => p.id).sort();
  let last;
  // Poll both sides until they agree (the simulator keeps trading), with a deadline.
  await waitFor(async () => {
    const [a, b] = await Promise.all([shown(), mine()]);
    last = { shown: a, api: b };
    return JSON.stringify(a) === JSON.stringify(b);
  }, { timeoutMs: 10_000, what: "the page's open positions to equal GET /v1/positions?status=open" }).catch(() => {});
  assert.deepEqual(last.shown, last.api, "the page lists alice's open positions");
  for (const id of bobPositions) assert.ok(!last.shown.includes(id), `bob's position ${id} is not shown`);
  assert.deepEqual(app.pageErrors, []);
});
