// Test doubles for the Tradewire client: the protocol crate's golden fixtures, a fake clock
// (setTimeout/clearTimeout/now), a fake WebSocket network, a fake fetch, and a harness that
// wires them into a client. Not a test file itself (node --test lists it with no tests).

import { readFileSync } from "node:fs";
import { Tradewire } from "../tradewire.js";

const FIXTURES = new URL("../../crates/tradewire-protocol/fixtures/", import.meta.url);

/** A golden frame of the protocol crate, parsed: `fixture("server", "welcome")`. */
export function fixture(side, name) {
  return JSON.parse(readFileSync(new URL(`${side}/${name}.json`, FIXTURES), "utf8"));
}

/** Let every pending promise callback run. */
export function flush() {
  return new Promise((resolve) => setImmediate(resolve));
}

/** A clock whose timers fire only when the test advances it. Starts at the fixtures' time. */
export class FakeClock {
  now = 1732230000000;
  #timers = new Map();
  #nextId = 1;

  setTimeout = (fn, ms) => {
    const id = this.#nextId++;
    this.#timers.set(id, { id, fn, ms, due: this.now + ms });
    return id;
  };

  clearTimeout = (id) => {
    this.#timers.delete(id);
  };

  /** Pending timers, soonest first: `{ms, due}`. */
  pending() {
    return [...this.#timers.values()].sort((a, b) => a.due - b.due || a.id - b.id);
  }

  /** Move time forward by `ms`, firing due timers in order (flushing promises between). */
  async advance(ms) {
    const end = this.now + ms;
    for (;;) {
      await flush();
      const next = this.pending()[0];
      if (!next || next.due > end) break;
      this.#timers.delete(next.id);
      this.now = next.due;
      next.fn();
    }
    this.now = end;
    await flush();
  }
}

/** A WebSocket class whose instances the test drives (`open`, `receive`, `drop`). */
export function fakeNetwork() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      sockets.push(this);
    }

    send(text) {
      if (this.readyState !== 1) throw new Error("send on a socket that is not open");
      this.sent.push(JSON.parse(text));
    }

    close(code, reason) {
      this.closedWith = { code, reason };
      this.readyState = 3;
    }

    // --- driven by the test ---
    open() {
      this.readyState = 1;
      this.onopen?.({});
    }

    receive(frame) {
      this.onmessage?.({ data: typeof frame === "string" ? frame : JSON.stringify(frame) });
    }

    drop(code = 1006, reason = "") {
      this.readyState = 3;
      this.onclose?.({ code, reason, wasClean: code !== 1006 });
    }

    /** A failed connection as Node 20's WebSocket reports it: `error` and no `close`. */
    fail() {
      this.readyState = 3;
      this.onerror?.({ type: "error" });
    }

    /** Frames the client sent with this `op`. */
    frames(op) {
      return this.sent.filter((f) => f.op === op);
    }
  }
  return {
    WebSocket: FakeWebSocket,
    sockets,
    get last() {
      return sockets[sockets.length - 1];
    },
  };
}

/**
 * A fetch that records its calls and answers with `respond(url, init)` →
 * `{status, body}` (or throws, for a network error).
 */
const NOTHING_NEW = { status: 200, body: { events: [], position: null, more: false } };

export function fakeFetch(respond = () => NOTHING_NEW) {
  const calls = [];
  const fetch = async (href, init = {}) => {
    const url = new URL(href, "http://page.test"); // a relative URL resolves against the page
    calls.push({ url, init });
    const { status = 200, body = null } = await respond(url, init);
    return { status, ok: status >= 200 && status < 300, json: async () => body };
  };
  return { fetch, calls };
}

/**
 * A client wired to fakes. Returns `{client, clock, net, states, errors, http}`; `states`
 * collects every `state` event, `errors` every `error` event.
 */
export function harness({ respond, ...options } = {}) {
  const clock = new FakeClock();
  const net = fakeNetwork();
  const http = fakeFetch(respond);
  const client = new Tradewire({
    url: "ws://tradewire.test/v1/ws",
    token: "tok-1",
    expiresAt: clock.now + 3_600_000,
    WebSocket: net.WebSocket,
    fetch: http.fetch,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: () => clock.now,
    random: () => 0.5,
    autoConnect: false,
    ...options,
  });
  const states = [];
  const errors = [];
  client.on("state", (s) => states.push(s));
  client.on("error", (e) => errors.push(e));
  return { client, clock, net, states, errors, http };
}

/** Open the newest socket and answer with the welcome fixture (optionally altered). */
export function goLive(net, welcome = {}) {
  const ws = net.last;
  ws.open();
  ws.receive({ ...fixture("server", "welcome"), ...welcome });
  return ws;
}

/** Advance `ms` while the server behind `ws` sends a heartbeat every interval. */
export async function keepAlive(clock, ws, ms, everyMs = fixture("server", "welcome").heartbeat_ms) {
  for (let t = 0; t < ms; t += everyMs) {
    await clock.advance(Math.min(everyMs, ms - t));
    ws.receive(fixture("server", "heartbeat"));
  }
}

/** The `state` values in order, e.g. ["connecting", "live"]. */
export function stateNames(states) {
  return states.map((s) => s.state);
}
