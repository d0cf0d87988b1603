// Acceptance 5: while connected for 30 s, the page makes no polling requests (neither for
// changes nor for health: the badge comes from the pushed `system` topic).

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawnApp } from "./helpers.mjs";

let app;
before(async () => (app = await spawnApp()));
after(() => app?.close());

test("a live page makes no /v1/changes requests for 30 s", async () => {
  const page = await app.context.newPage();
  const requests = [];
  page.on("request", (r) => requests.push(new URL(r.url()).pathname));
  await app.login("alice", page);
  await page.evaluate(() => {
    window.__states = [];
    const el = document.querySelector('[data-testid="conn-indicator"]');
    new MutationObserver(() => window.__states.push(el.dataset.state)).observe(el, { attributes: true, attributeFilter: ["data-state"] });
  });
  const start = Date.now();
  const events = () => page.evaluate(() => window.tradewire.sub.position?.seq ?? 0);
  const seqBefore = await events();
  // The measurement window itself: 30 s of a live page.
  await page.waitForTimeout(30_000);
  const polls = requests.filter((p) => p.startsWith("/v1/changes") || p === "/readyz" || p === "/healthz");
  // The health badge is pushed on the public `system` topic, not polled.
  const badge = await page.evaluate(() => {
    const el = document.querySelector('[data-testid="health-badge"]');
    return { hidden: el.hidden, state: el.dataset.state, text: el.textContent };
  });
  assert.deepEqual(badge, { hidden: false, state: "ok", text: "SYSTEM OK" });

  assert.ok(Date.now() - start >= 30_000);
  assert.ok(requests.includes("/v1/market/symbols"), "the request counter sees the page's requests");
  assert.ok((await events()) > seqBefore, "changes kept arriving over the push connection");
  assert.deepEqual(await page.evaluate(() => window.__states.filter((s) => s !== "live")), [], "the page stayed live");
  assert.deepEqual(polls, [], "no polling requests");
});
