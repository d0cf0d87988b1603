// Heartbeat timeout, ping/pong latency and the state events that report them.

import { test } from "node:test";
import assert from "node:assert/strict";
import { fixture, goLive, harness, stateNames } from "./fakes.mjs";

const HEARTBEAT_MS = fixture("server", "welcome").heartbeat_ms; // 15 s

test("nothing heard for two heartbeat intervals: close the socket and reconnect", async () => {
  const h = harness({ random: () => 0 });
  const sub = h.client.subscribe(["*"]);
  h.client.connect();
  const ws = goLive(h.net);
  ws.receive({ ...fixture("server", "subscribed"), id: sub.id });
  ws.receive({ ...fixture("server", "snapshot"), id: sub.id });
  await h.clock.advance(2 * HEARTBEAT_MS - 1);
  assert.equal(ws.closedWith, null, "still within two intervals");
  await h.clock.advance(1);
  assert.deepEqual(ws.closedWith, { code: 4000, reason: "heartbeat_timeout" });
  assert.equal(h.client.status().state, "connecting");
  await h.clock.advance(0);
  const ws2 = goLive(h.net);
  assert.deepEqual(ws2.frames("subscribe")[0].from, { epoch: "e1", seq: 41 }, "and resumes");
  h.client.close();
});

test("any frame keeps the connection alive", async () => {
  const h = harness();
  h.client.connect();
  const ws = goLive(h.net);
  for (let i = 0; i < 10; i++) {
    await h.clock.advance(HEARTBEAT_MS * 1.5);
    ws.receive(i % 2 ? fixture("server", "heartbeat") : fixture("server", "market"));
  }
  assert.equal(ws.closedWith, null);
  assert.equal(h.net.sockets.length, 1);
  await h.clock.advance(2 * HEARTBEAT_MS);
  assert.notEqual(ws.closedWith, null, "until the frames stop");
  h.client.close();
});

test("the timeout follows the server's heartbeat_ms", async () => {
  const h = harness();
  h.client.connect();
  const ws = goLive(h.net, { heartbeat_ms: 1000 });
  await h.clock.advance(1999);
  assert.equal(ws.closedWith, null);
  await h.clock.advance(1);
  assert.equal(ws.closedWith?.reason, "heartbeat_timeout");
  h.client.close();
});

test("ping/pong measures latency; state events carry it and the last message's age", async () => {
  const h = harness();
  h.client.connect();
  const ws = goLive(h.net);
  const ping = ws.frames("ping")[0];
  assert.deepEqual(ping, fixture("client", "ping"), "ping.json: sent at the fixture's time");
  await h.clock.advance(42);
  ws.receive(fixture("server", "pong"));
  const last = h.states.at(-1);
  assert.equal(last.state, "live");
  assert.equal(last.latencyMs, 42);
  assert.equal(last.lastMessageAgeMs, 0);
  await h.clock.advance(5000);
  assert.equal(h.client.status().lastMessageAgeMs, 5000);
  await h.clock.advance(HEARTBEAT_MS - 5042);
  assert.equal(ws.frames("ping").length, 2, "a ping every heartbeat interval");
  h.client.close();
});

test("state events: connecting, live, then connecting/offline on loss", async () => {
  const h = harness({ random: () => 0 });
  h.client.connect();
  goLive(h.net);
  h.net.last.drop(1001);
  await h.clock.advance(0);
  h.net.last.drop(1006);
  await h.clock.advance(0);
  goLive(h.net);
  assert.deepEqual(stateNames(h.states), ["connecting", "live", "connecting", "offline", "live"]);
  const offline = h.states[3];
  assert.equal(offline.code, 1006);
  assert.equal(offline.attempt, 2);
  h.client.close();
});
