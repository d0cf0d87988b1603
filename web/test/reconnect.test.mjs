// Backoff schedule and the rule of every close code in PROTOCOL.md's table.

import { test } from "node:test";
import assert from "node:assert/strict";
import { backoffDelay, closeRule } from "../tradewire.js";
import { goLive, harness, stateNames } from "./fakes.mjs";

const ALMOST_ONE = 1 - Number.EPSILON;

test("backoff: full jitter below min(30 s, 1 s * 2^attempt)", () => {
  const ceilings = [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000];
  ceilings.forEach((ceiling, attempt) => {
    assert.equal(backoffDelay(attempt, () => 0), 0, `attempt ${attempt} can be immediate`);
    assert.equal(backoffDelay(attempt, () => 0.5), ceiling / 2, `attempt ${attempt} midpoint`);
    const top = backoffDelay(attempt, () => ALMOST_ONE);
    assert.ok(top < ceiling && top > ceiling - 1, `attempt ${attempt}: ${top} just below ${ceiling}`);
  });
  assert.equal(backoffDelay(1000, () => 0.5), 15000, "a huge attempt stays capped");
});

test("backoff: the delay is the random draw times the ceiling", () => {
  const draws = [0.1, 0.9, 0.25];
  let calls = 0;
  const random = () => draws[calls++];
  assert.equal(backoffDelay(3, random), 800);
  assert.equal(backoffDelay(3, random), 7200);
  assert.equal(backoffDelay(3, random), 2000);
  assert.equal(calls, 3, "one draw per delay");
});

test("client: failed attempts back off 1, 2, 4 … 30 s with jitter; live resets the count", async () => {
  const draws = [];
  const { client, clock, net } = harness({ random: () => (draws.push(0.75), 0.75) });
  client.connect();
  const delays = [];
  for (let i = 0; i < 8; i++) {
    net.last.drop(1006);
    const retry = clock.pending().find((t) => t.ms === client.status().retryInMs);
    delays.push(retry.ms);
    await clock.advance(retry.ms);
    assert.equal(net.sockets.length, i + 2, "reconnected once the delay passed");
  }
  assert.deepEqual(delays, [750, 1500, 3000, 6000, 12000, 22500, 22500, 22500]);
  assert.equal(draws.length, 8, "each delay used random()");

  goLive(net);
  assert.equal(client.status().attempt, 0);
  net.last.drop(1001);
  assert.equal(client.status().retryInMs, 750, "back to the first step after a live connection");
  client.close();
});

test("client: does not reconnect before the backoff delay", async () => {
  const { client, clock, net } = harness({ random: () => 0.5 });
  client.connect();
  goLive(net);
  net.last.drop(1001); // attempt 0: 500 ms
  await clock.advance(499);
  assert.equal(net.sockets.length, 1);
  await clock.advance(1);
  assert.equal(net.sockets.length, 2);
  client.close();
});

// The table of docs/PROTOCOL.md, plus an abnormal close (1006) and an unknown code.
const TABLE = [
  { code: 1000, rule: "never" },
  { code: 1001, rule: "backoff" },
  { code: 1009, rule: "never" },
  { code: 4001, rule: "never" },
  { code: 4003, rule: "never" },
  { code: 4008, rule: "immediately" },
  { code: 4009, rule: "refresh" },
  { code: 4029, rule: "backoff" },
  { code: 4400, rule: "never" },
  { code: 1006, rule: "backoff" },
  { code: 4999, rule: "backoff" },
];

test("closeRule follows the protocol's table", () => {
  for (const { code, rule } of TABLE) assert.equal(closeRule(code), rule, `close ${code}`);
});

for (const { code, rule } of TABLE) {
  test(`close ${code} on a live connection: ${rule}`, async () => {
    let refreshes = 0;
    const { client, clock, net, states } = harness({
      random: () => 0.5,
      refreshToken: async () => `tok-${++refreshes + 1}`,
    });
    client.connect();
    goLive(net);
    net.last.drop(code, "reason");

    if (rule === "never") {
      assert.equal(client.status().state, "fatal");
      assert.equal(client.status().code, code);
      assert.equal(clock.pending().length, 0, "no timer left: no retry, no refresh, no poll");
      await clock.advance(3_600_000);
      assert.equal(net.sockets.length, 1, "never reconnects");
      return;
    }

    assert.deepEqual(stateNames(states), ["connecting", "live", "connecting"]);
    if (rule === "backoff") {
      assert.equal(client.status().retryInMs, 500);
      await clock.advance(499);
      assert.equal(net.sockets.length, 1, "waits for the backoff");
      await clock.advance(1);
    } else {
      assert.equal(client.status().retryInMs, 0);
      await clock.advance(0);
    }
    assert.equal(net.sockets.length, 2, "reconnected");
    net.last.open();
    const expectedToken = rule === "refresh" ? "tok-2" : "tok-1";
    assert.deepEqual(net.last.sent[0], { op: "auth", token: expectedToken });
    assert.equal(refreshes, rule === "refresh" ? 1 : 0);
    client.close();
  });
}

test("close 4009 without a refreshToken callback is fatal: the token cannot be renewed", () => {
  const { client, net } = harness();
  client.connect();
  goLive(net);
  net.last.drop(4009);
  assert.equal(client.status().state, "fatal");
});

test("a fatal client can be started again with connect()", async () => {
  const { client, net } = harness();
  client.connect();
  goLive(net);
  net.last.drop(4001);
  assert.equal(client.status().state, "fatal");
  client.setToken("tok-new");
  client.connect();
  net.last.open();
  assert.deepEqual(net.last.sent[0], { op: "auth", token: "tok-new" });
  client.close();
});

test("close() stops for good: no retry, no state after 'closed'", async () => {
  const { client, clock, net, states } = harness();
  client.connect();
  const ws = goLive(net);
  client.close();
  assert.deepEqual(ws.closedWith, { code: 1000, reason: "normal" });
  assert.equal(clock.pending().length, 0);
  ws.drop(1000);
  await clock.advance(120_000);
  assert.equal(net.sockets.length, 1);
  assert.deepEqual(stateNames(states), ["connecting", "live", "closed"]);
});

test("state: connecting while the first retry after a live drop runs, offline once it fails", async () => {
  const { client, clock, net, states } = harness({ random: () => 0 });
  client.connect();
  goLive(net);
  net.last.drop(1001);
  await clock.advance(0);
  net.last.drop(1006); // the server is still down
  assert.deepEqual(stateNames(states), ["connecting", "live", "connecting", "offline"]);
  assert.equal(client.status().attempt, 2);
  await clock.advance(0);
  goLive(net);
  assert.equal(client.status().state, "live");
  client.close();
});

test("an attempt without welcome is abandoned after connectTimeoutMs", async () => {
  const { client, clock, net } = harness({ connectTimeoutMs: 10_000, random: () => 0 });
  client.connect();
  net.last.open(); // TCP up, but no welcome ever comes
  await clock.advance(9_999);
  assert.equal(net.sockets.length, 1);
  await clock.advance(1);
  assert.equal(net.sockets[0].closedWith?.reason, "connect_timeout");
  assert.equal(client.status().state, "offline");
  await clock.advance(0);
  assert.equal(net.sockets.length, 2, "tries again");
  client.close();
});

test("an error event without a close (Node 20's WebSocket) counts as a failed attempt", async () => {
  const { client, clock, net } = harness({ random: () => 0.5 });
  client.connect();
  net.last.fail();
  assert.equal(client.status().state, "offline");
  assert.equal(client.status().retryInMs, 500);
  await clock.advance(500);
  assert.equal(net.sockets.length, 2);
  goLive(net);
  net.sockets[0].drop(1006); // a late close of the old socket changes nothing
  assert.equal(client.status().state, "live");
  client.close();
});

test("autoConnect: connects once the constructor returned, so a listener sees 'connecting'", async () => {
  const { client, net, states } = harness({ autoConnect: true });
  assert.equal(net.sockets.length, 0, "not inside the constructor");
  await Promise.resolve();
  assert.equal(net.sockets.length, 1);
  assert.deepEqual(stateNames(states), ["connecting"]);
  client.close();

  const other = harness({ autoConnect: true });
  other.client.close(); // closed before it started
  await Promise.resolve();
  assert.equal(other.net.sockets.length, 0);
});

test("no usable WebSocket (none given in Node 20, or a bad URL) is fatal and reported", async () => {
  class Refusing {
    constructor() {
      throw new SyntaxError("invalid URL");
    }
  }
  const nodeHasNone = typeof globalThis.WebSocket !== "function";
  for (const WebSocket of nodeHasNone ? [undefined, Refusing] : [Refusing]) {
    const { client, errors } = harness({ WebSocket });
    client.connect();
    await Promise.resolve();
    assert.equal(client.status().state, "fatal");
    assert.equal(errors[0].code, "no_websocket");
  }
});
