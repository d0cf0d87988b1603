// The idempotent per-topic row store, fed with the protocol crate's golden frames.

import { test } from "node:test";
import assert from "node:assert/strict";
import { RowStore } from "../tradewire.js";
import { fixture } from "./fakes.mjs";

const snapshot = fixture("server", "snapshot"); // orders: ord_1 "new" at e1:41, positions: []
const update = fixture("server", "event"); // e1:42 ord_1 -> "filled"
const del = fixture("server", "event_delete"); // e1:43 ord_1 deleted
const insert = fixture("server", "event_insert_no_id"); // e1:41 ord_1 inserted as "new"

function storeFromSnapshot() {
  const store = new RowStore();
  for (const [topic, rows] of Object.entries(snapshot.rows)) store.replace(topic, rows, snapshot.position);
  return store;
}

test("a snapshot fills each topic and records its position", () => {
  const store = storeFromSnapshot();
  assert.deepEqual(store.rows("orders"), snapshot.rows.orders);
  assert.deepEqual(store.rows("positions"), []);
  assert.deepEqual(store.position("orders"), { epoch: "e1", seq: 41 });
  assert.deepEqual(store.topics().sort(), ["orders", "positions"]);
});

test("an update upserts by id, and the same seq again is dropped", () => {
  const store = storeFromSnapshot();
  assert.equal(store.apply(update), true);
  assert.equal(store.get("orders", "ord_1").status, "filled");
  assert.equal(store.rows("orders").length, 1);

  const tampered = { ...update, row: { ...update.row, status: "tampered" } };
  assert.equal(store.apply(tampered), false, "seq 42 was applied already");
  assert.equal(store.get("orders", "ord_1").status, "filled");
});

test("a delete removes the row named by `old`", () => {
  const store = storeFromSnapshot();
  store.apply(update);
  assert.equal(store.apply(del), true);
  assert.equal(store.get("orders", "ord_1"), undefined);
  assert.deepEqual(store.rows("orders"), []);
  assert.deepEqual(store.position("orders"), { epoch: "e1", seq: 43 });
});

test("an older seq arriving late is ignored", () => {
  const store = storeFromSnapshot();
  store.apply(update); // 42: filled
  assert.equal(store.apply(insert), false, "seq 41 is older than 42");
  assert.equal(store.get("orders", "ord_1").status, "filled");
  assert.equal(store.apply({ ...update, seq: 40, row: { ...update.row, status: "stale" } }), false);
  assert.equal(store.get("orders", "ord_1").status, "filled");
});

test("an event at or below the snapshot's position changes nothing", () => {
  const store = storeFromSnapshot();
  assert.equal(store.apply({ ...insert, row: { ...insert.row, status: "old" } }), false);
  assert.equal(store.get("orders", "ord_1").status, "new");
});

test("a snapshot replaces the topic's rows: rows it lacks are gone", () => {
  const store = storeFromSnapshot();
  store.apply({ ...update, seq: 42, row: { ...update.row, id: "ord_2" } });
  assert.equal(store.rows("orders").length, 2);
  store.replace("orders", [{ ...update.row, id: "ord_3" }], { epoch: "e1", seq: 50 });
  assert.deepEqual(store.rows("orders").map((r) => r.id), ["ord_3"]);
  assert.equal(store.apply({ ...update, seq: 49 }), false, "the new snapshot covers seq 49");
});

test("topics are independent", () => {
  const store = storeFromSnapshot();
  store.apply(update);
  const position = { id: "pos_1", symbol: "BTCUSDT", status: "open" };
  const opened = { op: "event", seq: 44, epoch: "e1", topic: "positions", change: "insert", row: position };
  assert.equal(store.apply(opened), true);
  assert.deepEqual(store.rows("positions"), [position]);
  assert.equal(store.rows("orders").length, 1);
});

test("a change of epoch is applied (the log was reset)", () => {
  const store = storeFromSnapshot();
  store.apply(update);
  assert.equal(store.apply({ ...insert, epoch: "e2", seq: 1 }), true);
  assert.deepEqual(store.position("orders"), { epoch: "e2", seq: 1 });
});

test("the primary key can be another column", () => {
  const store = new RowStore({ key: "symbol" });
  store.replace("ticks", [{ symbol: "BTCUSDT", last: "1" }], { epoch: "e1", seq: 1 });
  const row = { symbol: "BTCUSDT", last: "2" };
  store.apply({ topic: "ticks", seq: 2, epoch: "e1", change: "update", row });
  assert.deepEqual(store.rows("ticks"), [{ symbol: "BTCUSDT", last: "2" }]);
});
