// Fallback polling of /v1/changes: only while the push connection is down, at most once a
// minute, stopped when it is back; events applied once; 409 leads to a snapshot.

import { test } from "node:test";
import assert from "node:assert/strict";
import { fixture, goLive, harness, keepAlive } from "./fakes.mjs";

const MINUTE = 60_000;
const server = (name) => fixture("server", name);

/** The SSE/poll form of an event fixture: no subscription id. */
function pollEvent(name, changes = {}) {
  const { id: _id, ...ev } = server(name);
  return { ...ev, ...changes };
}

/** A client whose filtered subscription got the snapshot fixture (e1:41), then went down. */
async function downAfterSnapshot(respond) {
  const h = harness({ respond, random: () => 0 });
  const sub = h.client.subscribe(["orders", "positions"], { where: { symbol: "BTCUSDT" } });
  const events = [];
  const resyncs = [];
  sub.on("event", (e) => events.push(e.seq)).on("resync", (r) => resyncs.push(r));
  h.client.connect();
  const ws = goLive(h.net);
  ws.receive(server("subscribed"));
  ws.receive(server("snapshot"));
  return { ...h, sub, ws, events, resyncs };
}

/** The server stays unreachable: every reconnect attempt fails at once. */
function refuseConnections(net) {
  const Base = net.WebSocket;
  return () => {
    for (const ws of net.sockets) if (ws.readyState === 0) ws.drop(1006);
    return Base;
  };
}

test("no polling while live, however long", async () => {
  const h = await downAfterSnapshot();
  await keepAlive(h.clock, h.ws, 30 * MINUTE);
  assert.equal(h.net.sockets.length, 1, "the connection stayed up");
  assert.equal(h.http.calls.length, 0);
  h.client.close();
});

test("no polling during a quick reconnect (state 'connecting')", async () => {
  const h = await downAfterSnapshot();
  h.ws.drop(4008);
  await h.clock.advance(0);
  await keepAlive(h.clock, goLive(h.net), 5 * MINUTE);
  assert.equal(h.net.sockets.length, 2);
  assert.equal(h.http.calls.length, 0);
  h.client.close();
});

test("polls once the connection is down, at most once a minute, and stops when it is back", async () => {
  const h = await downAfterSnapshot();
  const failAttempts = refuseConnections(h.net);
  h.ws.drop(1001);
  await h.clock.advance(0);
  failAttempts(); // the first retry fails: offline
  assert.equal(h.client.status().state, "offline");
  await h.clock.advance(0);
  assert.equal(h.http.calls.length, 1, "the first poll right away");

  const call = h.http.calls[0];
  assert.equal(call.url.origin + call.url.pathname, "http://tradewire.test/v1/changes");
  assert.equal(call.url.searchParams.get("since"), "e1:41");
  assert.equal(call.url.searchParams.get("topics"), "orders,positions");
  assert.deepEqual(JSON.parse(call.url.searchParams.get("where")), { symbol: "BTCUSDT" });
  assert.equal(call.init.headers.authorization, "Bearer tok-1");

  // Reconnect attempts keep failing for five minutes: one poll a minute, no more.
  for (let t = 0; t < 5 * MINUTE; t += 1000) {
    await h.clock.advance(1000);
    failAttempts();
  }
  assert.equal(h.http.calls.length, 6);

  // Back, 30 s before the next poll is due: polling stops at once.
  await h.clock.advance(30_000);
  const ws = goLive(h.net);
  assert.equal(h.client.status().state, "live");
  await keepAlive(h.clock, ws, 10 * MINUTE);
  assert.equal(h.net.sockets.length, h.net.sockets.indexOf(ws) + 1, "still on that connection");
  assert.equal(h.http.calls.length, 6, "no poll after the connection is back");
  h.client.close();
});

test("a short outage after a poll still waits a minute before the next poll", async () => {
  const h = await downAfterSnapshot();
  const failAttempts = refuseConnections(h.net);
  h.ws.drop(1006); // drop + the attempt fails
  await h.clock.advance(0);
  failAttempts();
  await h.clock.advance(0);
  assert.equal(h.http.calls.length, 1);
  await h.clock.advance(10_000);
  goLive(h.net); // back for 10 s
  await h.clock.advance(10_000);
  h.net.last.drop(1006);
  await h.clock.advance(0);
  failAttempts();
  await h.clock.advance(MINUTE - 20_000 - 1);
  assert.equal(h.http.calls.length, 1, "less than a minute since the last poll");
  await h.clock.advance(1);
  assert.equal(h.http.calls.length, 2);
  h.client.close();
});

test("polled events go through the store once and advance the resume position", async () => {
  const pages = [
    { events: [pollEvent("event")], position: { epoch: "e1", seq: 42 }, more: true },
    {
      events: [pollEvent("event"), pollEvent("event_delete")],
      position: { epoch: "e1", seq: 47 },
      more: false,
    },
  ];
  const idle = { events: [], position: { epoch: "e1", seq: 47 }, more: false };
  const h = await downAfterSnapshot(() => ({ status: 200, body: pages.shift() ?? idle }));
  const failAttempts = refuseConnections(h.net);
  h.ws.drop(1006);
  await h.clock.advance(0);
  failAttempts();
  await h.clock.advance(0);
  assert.equal(h.http.calls.length, 2, "followed `more` within the round");
  assert.equal(h.http.calls[1].url.searchParams.get("since"), "e1:42");
  assert.deepEqual(h.events, [42, 43], "the duplicate 42 was dropped");
  assert.equal(h.sub.store.get("orders", "ord_1"), undefined, "the delete applied");
  assert.deepEqual(h.sub.position, { epoch: "e1", seq: 47 }, "position past non-matching changes");

  await h.clock.advance(MINUTE);
  const ws = goLive(h.net);
  const resume = ws.frames("subscribe")[0];
  assert.deepEqual(resume.from, { epoch: "e1", seq: 47 }, "the socket resumes from the poll");
  ws.receive(server("subscribed"));
  ws.receive(server("event_delete")); // 43 replayed over the socket
  assert.deepEqual(h.events, [42, 43], "nothing doubled");
  h.client.close();
});

test("409 from polling: resync, then a fresh snapshot once connected", async () => {
  const gone = { error: { code: "resync_required", message: "gone" } };
  const h = await downAfterSnapshot(() => ({ status: 409, body: gone }));
  const failAttempts = refuseConnections(h.net);
  h.ws.drop(1006);
  await h.clock.advance(0);
  failAttempts();
  await h.clock.advance(0);
  assert.deepEqual(h.resyncs, [{ reason: "resync_required", source: "poll" }]);
  assert.equal(h.sub.position, null);
  await h.clock.advance(MINUTE);
  assert.equal(h.http.calls.length, 1, "nothing left to poll from without a position");

  const ws = goLive(h.net);
  assert.deepEqual(ws.frames("subscribe")[0], { ...fixture("client", "subscribe"), from: "snapshot" });
  ws.receive(server("subscribed"));
  ws.receive({ ...server("snapshot"), position: { epoch: "e1", seq: 90 } });
  assert.deepEqual(h.sub.position, { epoch: "e1", seq: 90 });
  h.client.close();
});

test("a failed poll is reported and retried a minute later", async () => {
  let n = 0;
  const h = await downAfterSnapshot(() => {
    if (++n === 1) throw new TypeError("fetch failed");
    return { status: 200, body: { events: [], position: { epoch: "e1", seq: 41 }, more: false } };
  });
  const failAttempts = refuseConnections(h.net);
  h.ws.drop(1006);
  await h.clock.advance(0);
  failAttempts();
  await h.clock.advance(0);
  assert.equal(h.errors.at(-1).code, "poll_failed");
  for (let t = 0; t < MINUTE; t += 1000) {
    await h.clock.advance(1000);
    failAttempts();
  }
  assert.equal(h.http.calls.length, 2);
  h.client.close();
});

test("market-only subscriptions are never polled", async () => {
  const h = harness({ random: () => 0 });
  h.client.subscribe(["ticker:BTCUSDT"]);
  h.client.connect();
  goLive(h.net).drop(1006);
  await h.clock.advance(0);
  h.net.last.drop(1006);
  await h.clock.advance(5 * MINUTE);
  assert.equal(h.http.calls.length, 0);
  h.client.close();
});
