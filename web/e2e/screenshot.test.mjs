// Acceptance 6: screenshots of a busy dashboard at 1280×800 and at phone width are saved
// as test artifacts (artifacts/dashboard.png, artifacts/dashboard-phone.png).

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { statSync } from "node:fs";
import { artifactPath, spawnApp } from "./helpers.mjs";

let app;
before(async () => (app = await spawnApp()));
after(() => app?.close());

test("the dashboard is saved as a screenshot, readable at desktop and phone width", async () => {
  const { server } = app;
  const token = await server.token("alice");
  for (const [bot, direction] of [["bot_alice_1", "long"], ["bot_alice_2", "short"]]) {
    await server.api(token, "POST", "/v1/testing/simulate-signal", { bot_id: bot, direction });
  }
  await server.api(token, "POST", "/v1/orders", {
    client_order_id: "e2e-resting", symbol: "BTCUSDT", side: "buy", type: "limit", price: "50000", quantity: "0.01",
  });
  const page = await app.login("alice");
  await page.getByTestId("position-row").nth(1).waitFor();
  await page.getByTestId("order-row").first().waitFor();
  await page.getByTestId("fill-row").first().waitFor();
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="ticker-row"] [data-testid="ticker-last"]')[0]?.textContent !== "—");
  // The charts: the selected symbol's candles and the equity curve are drawn.
  await page.waitForFunction(() => document.querySelector('[data-testid="chart-symbol"]')?.textContent === "BTCUSDT");
  await page.waitForFunction(() => ["chart-candles", "chart-equity"].every((id) => document.querySelector(`[data-testid="${id}"] canvas`)));

  const desktop = artifactPath("dashboard.png");
  await page.screenshot({ path: desktop });
  assert.ok(statSync(desktop).size > 10_000);
  const overflow = () => page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok((await overflow()) <= 0, "no horizontal scrolling at 1280×800");

  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForFunction(() => document.documentElement.scrollWidth <= window.innerWidth, null, { timeout: 2000 }).catch(() => {});
  assert.ok((await overflow()) <= 0, "no horizontal scrolling at phone width");
  const phone = artifactPath("dashboard-phone.png");
  await page.screenshot({ path: phone, fullPage: true });
  assert.ok(statSync(phone).size > 10_000);
  assert.deepEqual(app.pageErrors, []);
});
