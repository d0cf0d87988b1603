// Subscriptions across reconnects: the frames sent (checked against the golden client
// fixtures), resume from the last applied position, heartbeats, resync and gaps.

import { test } from "node:test";
import assert from "node:assert/strict";
import { fixture, goLive, harness } from "./fakes.mjs";

const server = (name) => fixture("server", name);
const sent = (name) => fixture("client", name);

/** A live client with subscription s1 = the subscribe.json fixture, snapshot applied. */
function liveFilteredSubscription() {
  const h = harness();
  const sub = h.client.subscribe(["orders", "positions"], { where: { symbol: "BTCUSDT" } });
  const seen = { snapshot: [], event: [], resync: [], error: [], market: [] };
  for (const name of Object.keys(seen)) sub.on(name, (v) => seen[name].push(v));
  h.client.connect();
  const ws = goLive(h.net);
  ws.receive(server("subscribed"));
  ws.receive(server("snapshot"));
  return { ...h, sub, ws, seen };
}

test("auth is the first frame and subscribe follows welcome, in the fixtures' shape", () => {
  const { sub, ws } = liveFilteredSubscription();
  assert.deepEqual(Object.keys(ws.sent[0]), Object.keys(sent("auth")));
  assert.deepEqual(ws.sent[0], { op: "auth", token: "tok-1" });
  assert.deepEqual(ws.sent[1], sent("subscribe"), "subscribe.json exactly");
  assert.equal(sub.status, "active");
  assert.equal(ws.url, "ws://tradewire.test/v1/ws", "no token in the URL");
});

test("the snapshot fills the store; events update it once", () => {
  const { sub, ws, seen } = liveFilteredSubscription();
  assert.equal(seen.snapshot.length, 1);
  assert.equal(sub.store.get("orders", "ord_1").status, "new");
  ws.receive(server("event"));
  ws.receive(server("event")); // a duplicate
  assert.equal(seen.event.length, 1, "the duplicate is dropped");
  assert.equal(sub.store.get("orders", "ord_1").status, "filled");
  ws.receive(server("event_delete"));
  assert.deepEqual(sub.store.rows("orders"), []);
  assert.deepEqual(sub.position, { epoch: "e1", seq: 43 });
});

test("after a reconnect the subscription resumes from the last applied event", async () => {
  const { sub, ws, clock, net, seen } = liveFilteredSubscription();
  ws.receive(server("event")); // seq 42
  ws.drop(1001);
  await clock.advance(60_000);
  const ws2 = goLive(net);
  const resume = ws2.frames("subscribe")[0];
  assert.deepEqual(resume, { ...sent("subscribe"), from: { epoch: "e1", seq: 42 } });
  // The fixture of a resume has the same shape for its `from`.
  assert.deepEqual(Object.keys(resume.from), Object.keys(sent("subscribe_from_position").from));

  ws2.receive(server("subscribed"));
  ws2.receive(server("event")); // replayed again: at-least-once
  ws2.receive(server("event_delete")); // 43, new
  assert.deepEqual(seen.event.map((e) => e.seq), [42, 43], "nothing doubled, nothing missing");
  assert.equal(sub.store.get("orders", "ord_1"), undefined);
});

test("a heartbeat advances a filtered subscription's resume point", async () => {
  const { ws, clock, net, sub } = liveFilteredSubscription();
  ws.receive(server("heartbeat")); // position e1:43, nothing of it matched our filter
  assert.deepEqual(sub.position, { epoch: "e1", seq: 43 });
  ws.drop(1001);
  await clock.advance(60_000);
  const ws2 = goLive(net);
  assert.deepEqual(ws2.frames("subscribe")[0].from, { epoch: "e1", seq: 43 });
});

test("a heartbeat does not advance a subscription the server has not confirmed", async () => {
  const h = harness();
  const sub = h.client.subscribe(["orders"], { from: "e1:40" });
  h.client.connect();
  const ws = goLive(h.net);
  assert.deepEqual(ws.frames("subscribe")[0].from, { epoch: "e1", seq: 40 });
  ws.receive(server("heartbeat")); // before `subscribed`: the replay from 40 may still be due
  assert.deepEqual(sub.position, { epoch: "e1", seq: 40 });
  ws.receive({ op: "subscribed", id: sub.id, topics: ["orders"] });
  ws.receive({ ...server("heartbeat"), position: { epoch: "e1", seq: 45 } });
  assert.deepEqual(sub.position, { epoch: "e1", seq: 45 });
  ws.receive({ ...server("heartbeat"), position: { epoch: "e1", seq: 44 } });
  assert.deepEqual(sub.position, { epoch: "e1", seq: 45 }, "never backwards");
  h.client.close();
});

test("resync_required leads to a snapshot subscription and a 'resync' event", () => {
  const h = harness();
  const sub = h.client.subscribe(["*"], { from: { epoch: "e0", seq: 7 } });
  const resyncs = [];
  const snapshots = [];
  sub.on("resync", (r) => resyncs.push(r)).on("snapshot", (s) => snapshots.push(s));
  h.client.connect();
  const ws = goLive(h.net);
  const from = { epoch: "e0", seq: 7 };
  assert.deepEqual(ws.frames("subscribe")[0], { ...sent("subscribe_from_position"), id: sub.id, from });
  ws.receive({ ...server("resync_required"), id: sub.id });
  assert.deepEqual(resyncs, [{ reason: "history_expired", source: "ws" }]);
  const again = { op: "subscribe", id: sub.id, topics: ["*"], from: "snapshot" };
  assert.deepEqual(ws.frames("subscribe")[1], again);
  assert.equal(sub.position, null);

  ws.receive({ ...server("subscribed"), id: sub.id, topics: ["*"] });
  ws.receive({ ...server("snapshot"), id: sub.id });
  assert.equal(snapshots.length, 1);
  assert.deepEqual(sub.position, { epoch: "e1", seq: 41 });
  h.client.close();
});

test("a gap on a subscription to everything resumes from the last applied change", () => {
  const h = harness();
  const sub = h.client.subscribe(["*"]);
  const events = [];
  sub.on("event", (e) => events.push(e.seq));
  h.client.connect();
  const ws = goLive(h.net);
  ws.receive({ ...server("subscribed"), id: sub.id, topics: ["*"] });
  ws.receive({ ...server("snapshot"), id: sub.id }); // e1:41
  ws.receive({ ...server("event_delete"), id: sub.id }); // 43: 42 is missing
  assert.deepEqual(events, [], "the event after the gap is not applied");
  assert.deepEqual(ws.frames("subscribe")[1].from, { epoch: "e1", seq: 41 });
  ws.receive({ ...server("event_delete"), id: sub.id, seq: 44 }); // still in flight from before
  assert.equal(ws.frames("subscribe").length, 2, "frames of the replaced subscription are ignored");
  ws.receive({ ...server("subscribed"), id: sub.id, topics: ["*"] });
  ws.receive({ ...server("event"), id: sub.id }); // 42
  ws.receive({ ...server("event_delete"), id: sub.id }); // 43
  assert.deepEqual(events, [42, 43]);
  h.client.close();
});

test("'now' resumes from the head of the stream at connect time", async () => {
  const h = harness();
  const where = { status: { in: ["new", "partially_filled"] } };
  const sub = h.client.subscribe(["orders"], { where, from: "now" });
  h.client.subscribe(["fills"]); // s2
  const s3 = h.client.subscribe(["orders"], { where, from: "now" });
  h.client.connect();
  const ws = goLive(h.net);
  assert.deepEqual(ws.frames("subscribe")[2], sent("subscribe_in_filter"), "the fixture exactly");
  ws.receive({ op: "subscribed", id: sub.id, topics: ["orders"] });
  assert.deepEqual(sub.position, { epoch: "e1", seq: 41 }, "the welcome's position");
  ws.drop(1001);
  await h.clock.advance(60_000);
  const ws2 = goLive(h.net);
  assert.deepEqual(ws2.frames("subscribe")[0].from, { epoch: "e1", seq: 41 });
  assert.equal(ws2.frames("subscribe")[2].from, "now", `${s3.id} was never confirmed`);
  h.client.close();
});

test("market frames reach the subscriptions with that topic only", () => {
  const h = harness();
  const orders = h.client.subscribe(["orders"]);
  const market = h.client.subscribe(["ticker:BTCUSDT", "book:BTCUSDT", "kline:BTCUSDT:1m"]);
  const got = { orders: [], market: [] };
  orders.on("market", (m) => got.orders.push(m));
  market.on("market", (m) => got.market.push(m));
  h.client.connect();
  const ws = goLive(h.net);
  const expected = { ...sent("subscribe_market"), id: market.id };
  assert.deepEqual(ws.frames("subscribe")[1], expected, "no `from` for market topics");
  ws.receive(server("market"));
  ws.receive({ ...server("market"), topic: "ticker:ETHUSDT" });
  assert.deepEqual(got.market, [server("market")]);
  assert.deepEqual(got.orders, []);
  h.client.close();
});

test("an error frame goes to its subscription; others to the client", () => {
  const { client, ws, seen, errors } = liveFilteredSubscription();
  ws.receive(server("error"));
  assert.deepEqual(seen.error, [server("error")]);
  ws.receive({ op: "error", code: "rate_limited", message: "slow down" });
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code, "rate_limited");
  ws.receive("not json");
  assert.equal(errors[1].code, "bad_frame");
  client.close();
});

test("unsubscribe sends unsubscribe.json and the subscription is not resumed", async () => {
  const { client, ws, sub, clock, net } = liveFilteredSubscription();
  sub.unsubscribe();
  assert.deepEqual(ws.sent.at(-1), sent("unsubscribe"));
  ws.receive(server("unsubscribed"));
  ws.receive(server("event"));
  assert.deepEqual(sub.store.get("orders", "ord_1").status, "new", "events after unsubscribing are ignored");
  ws.drop(1001);
  await clock.advance(60_000);
  const ws2 = goLive(net);
  assert.deepEqual(ws2.frames("subscribe"), []);
  client.close();
});

test("a subscription made while live is sent at once", () => {
  const h = harness();
  h.client.connect();
  const ws = goLive(h.net);
  const sub = h.client.subscribe(["orders", "positions"], { where: { symbol: "BTCUSDT" } });
  assert.deepEqual(ws.frames("subscribe"), [{ ...sent("subscribe"), id: sub.id }]);
  h.client.close();
});
