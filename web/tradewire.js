// Tradewire client: one WebSocket per instance carrying every subscription, resumed from the
// last applied (epoch, seq) after any reconnect; token refresh before expiry; reconnects as
// each close code says (backoff with full jitter, 1 s to 30 s); a heartbeat watchdog; and
// fallback polling of /v1/changes while the push connection is down. Each subscription
// keeps an idempotent per-topic row store.
//
// A plain ES module without dependencies: it runs in browsers and in Node 20 (pass
// `WebSocket`; `fetch` is global there). The wire protocol is docs/PROTOCOL.md. The row
// store lives here rather than in a store.js because the server embeds this one file.
//
//   import { Tradewire, login } from "/tradewire.js";
//   const { token, expires_at } = await login({ username, password });
//   const tw = new Tradewire({ url: "wss://host/v1/ws", token, expiresAt: expires_at });
//   tw.on("state", ({ state, lastMessageAgeMs, latencyMs }) => …);
//   const orders = tw.subscribe(["orders"], { where: { status: "new" } });
//   orders.on("snapshot", () => render(orders.store.rows("orders")))
//         .on("event", () => render(orders.store.rows("orders")));

// ---------------------------------------------------------------------------------------
// Close codes and backoff

/**
 * What to do after each close code, as in PROTOCOL.md's table (and the protocol crate's
 * `CloseCode::reconnect`): "never", "backoff", "immediately" or "refresh" (the token).
 */
export const CLOSE_RULES = Object.freeze({
  1000: "never",
  1001: "backoff",
  1002: "never",
  1007: "never",
  1009: "never",
  4001: "never",
  4003: "never",
  4008: "immediately",
  4009: "refresh",
  4029: "backoff",
  4400: "never",
});

/** The rule for a close code; codes outside the table (1006 abnormal, …) back off. */
export function closeRule(code) {
  return CLOSE_RULES[code] ?? "backoff";
}

/**
 * Delay before reconnect attempt `attempt` (0-based), with full jitter:
 * `random() * min(capMs, baseMs * 2^attempt)`.
 * @param {number} attempt
 * @param {() => number} random a draw in [0, 1)
 * @param {{baseMs?: number, capMs?: number}} [limits]
 */
export function backoffDelay(attempt, random, { baseMs = 1000, capMs = 30000 } = {}) {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return random() * ceiling;
}

// ---------------------------------------------------------------------------------------
// Small helpers

/** An error of this client; `code` is the server's error code or one of this module's. */
export class TradewireError extends Error {
  constructor(message, code, details = {}) {
    super(message);
    this.name = "TradewireError";
    this.code = code;
    Object.assign(this, details);
  }
}

const MARKET_TOPIC = /^(ticker|trades|book|kline|mark):/;

/** Is `topic` a public market topic (not part of any user's stream)? */
export function isMarketTopic(topic) {
  return MARKET_TOPIC.test(topic);
}

/** `{epoch, seq}` from a position object or its text form `<epoch>:<seq>`. */
export function parsePosition(p) {
  if (typeof p === "string") {
    const i = p.lastIndexOf(":");
    return { epoch: p.slice(0, i), seq: Number(p.slice(i + 1)) };
  }
  return { epoch: p.epoch, seq: p.seq };
}

function positionText(p) {
  return `${p.epoch}:${p.seq}`;
}

/** Is position `a` later than `b` in the same epoch? */
function isAhead(a, b) {
  return Boolean(a && b && a.epoch === b.epoch && a.seq > b.seq);
}

/** The `exp` claim of a JWT in ms, or null. */
function jwtExpiry(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const exp = JSON.parse(atob(part.padEnd(Math.ceil(part.length / 4) * 4, "="))).exp;
    return Number.isFinite(exp) ? exp * 1000 : null;
  } catch {
    return null;
  }
}

function report(err) {
  if (typeof globalThis.reportError === "function") globalThis.reportError(err);
  else console.error(err);
}

/** A minimal event emitter; a listener that throws does not break the emitter. */
class Emitter {
  #listeners = new Map();

  /** Call `cb(value)` on every `event`. Returns `this`, so calls chain. */
  on(event, cb) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    this.#listeners.get(event).add(cb);
    return this;
  }

  /** Stop calling `cb` on `event`. */
  off(event, cb) {
    this.#listeners.get(event)?.delete(cb);
    return this;
  }

  /** Internal: call the listeners of `event`; false when there were none. */
  emit(event, value) {
    const set = this.#listeners.get(event);
    if (!set?.size) return false;
    for (const cb of [...set]) {
      try {
        cb(value);
      } catch (err) {
        report(err);
      }
    }
    return true;
  }
}

// ---------------------------------------------------------------------------------------
// The idempotent row store

/**
 * Rows per topic, keyed by primary key, kept current by snapshots and change events.
 * Applying is idempotent: an event whose `seq` is at or below the topic's last applied
 * `seq` (same epoch) is dropped, so replays and duplicates change nothing.
 */
export class RowStore {
  #key;
  #topics = new Map();

  /**
   * @param {object} [options]
   * @param {string | ((topic: string, row: object) => unknown)} [options.key="id"] the primary
   *   key column, or a function of the topic and the row
   */
  constructor({ key = "id" } = {}) {
    this.#key = typeof key === "function" ? key : (_topic, row) => row[key];
  }

  #topic(name) {
    let t = this.#topics.get(name);
    if (!t) this.#topics.set(name, (t = { epoch: null, seq: 0, rows: new Map() }));
    return t;
  }

  /** Replace all rows of `topic` with a snapshot's `rows` taken at `position`. */
  replace(topic, rows, position) {
    const t = this.#topic(topic);
    t.rows = new Map(rows.map((row) => [this.#key(topic, row), row]));
    if (position) Object.assign(t, parsePosition(position));
  }

  /**
   * Apply one event (`{topic, seq, epoch, change, row?, old?}`): upsert `row`, or delete
   * by `old`'s key on `change: "delete"`. Returns false when the seq was already applied.
   */
  apply(event) {
    const t = this.#topic(event.topic);
    if (t.epoch === event.epoch && event.seq <= t.seq) return false;
    if (event.change === "delete") t.rows.delete(this.#key(event.topic, event.old));
    else t.rows.set(this.#key(event.topic, event.row), event.row);
    t.epoch = event.epoch;
    t.seq = event.seq;
    return true;
  }

  /** The rows of `topic`, in insertion order. */
  rows(topic) {
    return [...(this.#topics.get(topic)?.rows.values() ?? [])];
  }

  /** One row of `topic` by primary key, or undefined. */
  get(topic, key) {
    return this.#topics.get(topic)?.rows.get(key);
  }

  /** The last applied position of `topic`, or null. */
  position(topic) {
    const t = this.#topics.get(topic);
    return t?.epoch == null ? null : { epoch: t.epoch, seq: t.seq };
  }

  /** The topics this store has seen. */
  topics() {
    return [...this.#topics.keys()];
  }
}

// ---------------------------------------------------------------------------------------
// Login

/**
 * `POST /v1/auth/login`. Resolves to `{token, user_id, expires_at}` (ms); rejects with a
 * TradewireError carrying the HTTP `status` and the server's error `code`.
 * @param {{username: string, password: string, baseUrl?: string, fetch?: typeof fetch}} args
 */
export async function login({ username, password, baseUrl = "", fetch = globalThis.fetch }) {
  const res = await fetch(`${baseUrl}/v1/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, password }),
  });
  const body = await res.json().catch(() => null);
  if (!res.ok) {
    const err = body?.error ?? {};
    throw new TradewireError(err.message ?? `login failed: HTTP ${res.status}`, err.code ?? "login_failed", {
      status: res.status,
    });
  }
  return body;
}

// ---------------------------------------------------------------------------------------
// Subscriptions

/**
 * One subscription, kept alive across reconnects by its client. Events:
 * - `snapshot` (the snapshot frame; `store` already holds its rows),
 * - `event` (a change applied for the first time; `store` already holds it),
 * - `market` (a market frame of one of its topics),
 * - `resync` (`{reason, source}`: the position could not be served; a snapshot follows),
 * - `error` (an error frame for this subscription, e.g. `invalid_filter`).
 */
export class Subscription extends Emitter {
  #detach;

  constructor(id, topics, { where, from = "snapshot", key }, detach) {
    super();
    /** The id sent to the server. */
    this.id = id;
    this.topics = Object.freeze([...topics]);
    this.where = where ?? null;
    /** Rows per topic, kept by snapshots and events. */
    this.store = new RowStore({ key });
    this.privateTopics = this.topics.filter((t) => !isMarketTopic(t));
    /** Does it see every change of the user's stream (so `seq` must be contiguous)? */
    this.seesEverything = !where && this.topics.includes("*");
    /** How to start without a position: "snapshot" or "now". */
    this.start = from === "now" ? "now" : "snapshot";
    /** Read-only: the position to resume from (last applied change or heartbeat), or null. */
    this.position = from === "now" || from === "snapshot" ? null : parsePosition(from);
    /** Read-only: "pending" (subscribe sent or to be sent), "active" or "closed". */
    this.status = "pending";
    this.#detach = detach;
  }

  /** Stop this subscription (tells the server when connected). */
  unsubscribe() {
    this.status = "closed";
    this.#detach();
  }
}

/** The `subscribe` frame resuming `sub` from where it is. */
function subscribeFrame(sub) {
  const frame = { op: "subscribe", id: sub.id, topics: [...sub.topics] };
  if (sub.where) frame.where = sub.where;
  if (sub.privateTopics.length) frame.from = sub.position ? { ...sub.position } : sub.start;
  return frame;
}

function asPollError(err) {
  if (err instanceof TradewireError) return err;
  return new TradewireError(`polling failed: ${err?.message ?? err}`, "poll_failed", { cause: err });
}

// ---------------------------------------------------------------------------------------
// The client

/**
 * @typedef {object} TradewireOptions
 * @property {string} [url] WebSocket URL; default `ws(s)://<location.host>/v1/ws` in a page
 * @property {string} [httpUrl] base URL of the HTTP API (polling); default from `url`
 * @property {string} [token] bearer token (JWT)
 * @property {number} [expiresAt] token expiry in ms; default the JWT's `exp`
 * @property {() => Promise<string | {token: string, expires_at?: number}>} [refreshToken]
 *   gets a fresh token: before expiry, after close 4009, and at connect without a token
 * @property {number} [refreshAheadMs=60000] refresh this long before expiry (at most half
 *   the token's remaining life)
 * @property {number} [refreshRetryMs=10000] retry a failed scheduled refresh after this long
 * @property {boolean} [autoConnect=true] connect once the constructor has returned
 * @property {number} [connectTimeoutMs=10000] give up on an attempt without `welcome`
 * @property {number} [pingIntervalMs] latency ping period; default the server's `heartbeat_ms`
 * @property {number} [backoffBaseMs=1000]
 * @property {number} [backoffCapMs=30000]
 * @property {number} [pollIntervalMs=60000] fallback polling period (a round at most this often)
 * @property {number} [pollLimit=500] `limit` of each `/v1/changes` request
 * @property {number} [pollMaxPages=10] pages per subscription and round while `more` is true
 * @property {typeof WebSocket} [WebSocket] default `globalThis.WebSocket`
 * @property {typeof fetch} [fetch] default `globalThis.fetch`
 * @property {(fn: () => void, ms: number) => unknown} [setTimeout]
 * @property {(handle: unknown) => void} [clearTimeout]
 * @property {() => number} [now] ms clock, default `Date.now`
 * @property {() => number} [random] draw in [0, 1), default `Math.random`
 */

/**
 * @typedef {object} ConnectionStatus
 * @property {"connecting"|"live"|"offline"|"fatal"|"closed"} state
 * @property {number|null} lastMessageAgeMs ms since the last frame from the server
 * @property {number|null} latencyMs last ping/pong round trip
 * @property {number} attempt failed attempts since the connection was last live
 * @property {number|null} retryInMs delay before the next attempt, when one is scheduled
 * @property {number|null} code close code of the last drop
 * @property {string|null} reason its reason
 */

function withDefaults(o) {
  const location = globalThis.location;
  const scheme = location?.protocol === "https:" ? "wss" : "ws";
  const url = o.url ?? (location ? `${scheme}://${location.host}/v1/ws` : null);
  if (!url) throw new TypeError("Tradewire: `url` is required outside a page");
  if (!o.token && !o.refreshToken) throw new TypeError("Tradewire: `token` or `refreshToken` is required");
  const st = o.setTimeout ?? globalThis.setTimeout;
  const ct = o.clearTimeout ?? globalThis.clearTimeout;
  const fetchFn = o.fetch ?? globalThis.fetch;
  return {
    refreshAheadMs: 60000,
    refreshRetryMs: 10000,
    autoConnect: true,
    connectTimeoutMs: 10000,
    pingIntervalMs: null,
    backoffBaseMs: 1000,
    backoffCapMs: 30000,
    pollIntervalMs: 60000,
    pollLimit: 500,
    pollMaxPages: 10,
    ...o,
    url,
    httpUrl: o.httpUrl ?? httpBase(url),
    WebSocket: o.WebSocket ?? globalThis.WebSocket,
    // Plain calls: a browser's setTimeout/fetch refuse any `this` but the window.
    setTimeout: (fn, ms) => st(fn, ms),
    clearTimeout: (h) => ct(h),
    fetch: (...args) => fetchFn(...args),
    now: o.now ?? Date.now,
    random: o.random ?? Math.random,
  };
}

function httpBase(wsUrl) {
  try {
    const u = new URL(wsUrl);
    return `${u.protocol === "wss:" ? "https:" : "http:"}//${u.host}`;
  } catch {
    return "";
  }
}

/**
 * A Tradewire connection shared by all its subscriptions. Events:
 * - `state` ({@link ConnectionStatus}): on every transition, after every failed attempt and
 *   after each ping round trip (so an indicator's tooltip stays fresh);
 * - `welcome` (the welcome frame), on each (re)connect;
 * - `error` (a TradewireError): error frames without a subscription, failed refreshes and
 *   polls, malformed frames. Logged with console.warn when nobody listens.
 */
export class Tradewire extends Emitter {
  #o;
  #ws = null;
  #live = false;
  #state = "closed";
  #stopped = true;
  #gen = 0;
  #attempt = 0;
  #timers = new Map();
  #subs = new Map();
  #nextId = 1;
  #token = null;
  #expiresAt = null;
  #tokenStale = false;
  #refreshing = null;
  #head = null;
  #heartbeatMs = 15000;
  #userId = null;
  #lastMessageAt = null;
  #latencyMs = null;
  #lastClose = null;
  #retryInMs = null;
  #polling = false;
  #pollGen = 0;
  #lastPollAt = -Infinity;
  #abort = null;
  #autoConnect = true;

  /** @param {TradewireOptions} options */
  constructor(options = {}) {
    super();
    this.#o = withDefaults(options);
    if (options.token) this.#adoptToken(options.token, options.expiresAt);
    // After the constructor returns, so listeners attached right away see "connecting".
    if (this.#o.autoConnect) queueMicrotask(() => this.#autoConnect && this.connect());
  }

  /** Start (or restart, after `close()` or a fatal close) connecting. */
  connect() {
    this.#autoConnect = false;
    if (!this.#stopped) return this;
    this.#stopped = false;
    this.#attempt = 0;
    this.#scheduleRefresh();
    this.#setState("connecting");
    this.#open();
    return this;
  }

  /** Close the connection and stop reconnecting, refreshing and polling. */
  close() {
    this.#autoConnect = false;
    this.#stopped = true;
    this.#gen++;
    this.#stopPolling();
    for (const name of [...this.#timers.keys()]) this.#disarm(name);
    const { ws } = this.#release();
    try {
      ws?.close(1000, "normal");
    } catch {
      // already closed
    }
    this.#setState("closed");
  }

  /**
   * Subscribe to `topics` (private topics, `"*"`, and/or market topics).
   * @param {string[]} topics
   * @param {object} [options]
   * @param {object} [options.where] row filter: `{col: value}` or `{col: {in: [...]}}`, ANDed
   * @param {"snapshot"|"now"|{epoch: string, seq: number}|string} [options.from="snapshot"]
   *   where to start; later reconnects always resume from the last applied position
   * @param {string|Function} [options.key="id"] the store's primary key
   * @returns {Subscription}
   */
  subscribe(topics, options = {}) {
    const list = Array.isArray(topics) ? topics : [topics];
    if (!list.length) throw new TypeError("Tradewire.subscribe: at least one topic");
    const sub = new Subscription(`s${this.#nextId++}`, list, options, () => this.#unsubscribe(sub));
    this.#subs.set(sub.id, sub);
    if (this.#live) this.#sendSubscribe(sub);
    return sub;
  }

  /** The current token. */
  get token() {
    return this.#token;
  }

  /** The user of the connection (from `welcome`), or null. */
  get userId() {
    return this.#userId;
  }

  /** The connection state and its measurements. @returns {ConnectionStatus} */
  status() {
    return {
      state: this.#state,
      lastMessageAgeMs: this.#lastMessageAt == null ? null : this.#o.now() - this.#lastMessageAt,
      latencyMs: this.#latencyMs,
      attempt: this.#attempt,
      retryInMs: this.#retryInMs,
      code: this.#lastClose?.code ?? null,
      reason: this.#lastClose?.reason ?? null,
    };
  }

  /** Use a new token: sent to the live connection with `{"op":"auth"}`, used by the next connect. */
  setToken(token, expiresAt) {
    this.#adoptToken(token, expiresAt);
    if (this.#live) this.#send({ op: "auth", token });
    if (!this.#stopped) this.#scheduleRefresh();
  }

  /** Get a fresh token from `refreshToken` now (one call at a time). Resolves to the token. */
  refresh() {
    if (!this.#o.refreshToken) {
      return Promise.reject(new TradewireError("no refreshToken callback", "refresh_failed"));
    }
    this.#refreshing ??= this.#fetchToken().finally(() => {
      this.#refreshing = null;
    });
    return this.#refreshing;
  }

  // --- tokens -----------------------------------------------------------------------

  #adoptToken(token, expiresAt) {
    this.#token = token;
    this.#expiresAt = expiresAt ?? jwtExpiry(token);
    this.#tokenStale = false;
  }

  async #fetchToken() {
    let got;
    try {
      got = await this.#o.refreshToken();
    } catch (err) {
      const message = `token refresh failed: ${err?.message ?? err}`;
      throw new TradewireError(message, "refresh_failed", { cause: err });
    }
    const { token, expires_at: expiresAt } = typeof got === "string" ? { token: got } : (got ?? {});
    if (!token) throw new TradewireError("refreshToken gave no token", "refresh_failed");
    this.setToken(token, expiresAt);
    return token;
  }

  #needsToken() {
    if (!this.#o.refreshToken) return false;
    return this.#tokenStale || !this.#token || (this.#expiresAt != null && this.#o.now() >= this.#expiresAt);
  }

  #scheduleRefresh() {
    this.#disarm("refresh");
    if (!this.#o.refreshToken || this.#expiresAt == null || this.#stopped) return;
    const left = this.#expiresAt - this.#o.now();
    if (left <= 0) return; // expired: the next connect (or close 4009) refreshes
    const lead = Math.min(this.#o.refreshAheadMs, left / 2);
    this.#arm("refresh", left - lead, () => this.#refreshOnTimer());
  }

  #refreshOnTimer() {
    this.refresh().catch((err) => {
      this.#emitError(err);
      if (this.#stopped) return;
      if (this.#o.now() >= this.#expiresAt) this.#tokenStale = true; // the next connect refreshes
      else this.#arm("refresh", this.#o.refreshRetryMs, () => this.#refreshOnTimer());
    });
  }

  // --- connection lifecycle ---------------------------------------------------------

  async #open() {
    const gen = ++this.#gen;
    if (this.#needsToken()) {
      try {
        await this.refresh();
      } catch (err) {
        if (gen !== this.#gen) return;
        this.#emitError(err);
        return this.#afterDrop(null, "refresh_failed", false);
      }
      if (gen !== this.#gen) return;
    }
    let ws;
    try {
      ws = new this.#o.WebSocket(this.#o.url); // throws on a malformed URL, or no WebSocket
    } catch (err) {
      this.#emitError(new TradewireError(`cannot open a WebSocket: ${err?.message ?? err}`, "no_websocket"));
      return this.#fatal(null, "no_websocket");
    }
    this.#ws = ws;
    ws.onopen = () => this.#send({ op: "auth", token: this.#token });
    ws.onmessage = (m) => this.#onMessage(m.data);
    ws.onclose = (e) => this.#onClose(e.code, e.reason);
    // Browsers follow an error with a 1006 close; Node 20's WebSocket may not: act at once.
    ws.onerror = () => this.#kill("socket_error");
    this.#arm("connect", this.#o.connectTimeoutMs, () => this.#kill("connect_timeout"));
  }

  /** Forget the socket (no more of its events) and the timers that belong to it. */
  #release() {
    const ws = this.#ws;
    const wasLive = this.#live;
    if (ws) ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    this.#ws = null;
    this.#live = false;
    this.#disarm("connect");
    this.#disarm("watchdog");
    this.#disarm("ping");
    return { ws, wasLive };
  }

  #onClose(code, reason) {
    const { wasLive } = this.#release();
    this.#afterDrop(code, reason, wasLive);
  }

  /** Give up on a socket that is dead or never came up, and reconnect. */
  #kill(reason) {
    const { ws, wasLive } = this.#release();
    try {
      ws?.close(4000, reason);
    } catch {
      // already closing
    }
    this.#afterDrop(1006, reason, wasLive);
  }

  /** Follow the close code's rule: stop, or schedule the next attempt. */
  #afterDrop(code, reason, wasLive) {
    this.#lastClose = { code, reason: reason || null };
    const rule = closeRule(code);
    if (rule === "never") return this.#fatal(code, reason);
    if (rule === "refresh") {
      if (!this.#o.refreshToken) return this.#fatal(code, reason);
      this.#tokenStale = true;
    }
    const delay = rule === "backoff" ? this.#nextBackoff() : 0;
    this.#retryInMs = delay;
    this.#arm("retry", delay, () => this.#open());
    if (wasLive) return this.#setState("connecting");
    this.#setState("offline");
    this.#startPolling();
  }

  #nextBackoff() {
    const { backoffBaseMs: baseMs, backoffCapMs: capMs, random } = this.#o;
    return backoffDelay(this.#attempt++, random, { baseMs, capMs });
  }

  #fatal(code, reason) {
    this.#stopped = true;
    this.#stopPolling();
    for (const name of [...this.#timers.keys()]) this.#disarm(name);
    this.#lastClose = { code, reason: reason || null };
    this.#setState("fatal");
  }

  #setState(state) {
    this.#state = state;
    this.emit("state", this.status());
  }

  #send(frame) {
    if (this.#ws?.readyState !== 1) return false;
    this.#ws.send(JSON.stringify(frame));
    return true;
  }

  // --- timers -----------------------------------------------------------------------

  #arm(name, ms, fn) {
    this.#disarm(name);
    const handle = this.#o.setTimeout(() => {
      this.#timers.delete(name);
      fn();
    }, Math.max(0, ms));
    this.#timers.set(name, handle);
  }

  #disarm(name) {
    if (!this.#timers.has(name)) return;
    this.#o.clearTimeout(this.#timers.get(name));
    this.#timers.delete(name);
  }

  /** Close the connection when nothing arrived for two heartbeat intervals. */
  #armWatchdog() {
    const limit = 2 * this.#heartbeatMs;
    const wait = this.#lastMessageAt + limit - this.#o.now();
    this.#arm("watchdog", wait, () => {
      if (this.#o.now() - this.#lastMessageAt >= limit) this.#kill("heartbeat_timeout");
      else this.#armWatchdog();
    });
  }

  #ping() {
    this.#send({ op: "ping", ts: this.#o.now() });
    this.#arm("ping", this.#o.pingIntervalMs ?? this.#heartbeatMs, () => this.#ping());
  }

  // --- frames from the server -------------------------------------------------------

  #onMessage(data) {
    this.#lastMessageAt = this.#o.now();
    let f;
    try {
      f = JSON.parse(String(data));
    } catch {
      return this.#emitError(new TradewireError("malformed frame from the server", "bad_frame"));
    }
    const sub = typeof f.id === "string" ? this.#subs.get(f.id) : undefined;
    switch (f.op) {
      case "welcome":
        return this.#onWelcome(f);
      case "heartbeat":
        return this.#onHeartbeat(f);
      case "pong":
        return this.#onPong(f);
      case "market":
        return this.#onMarket(f);
      case "error":
        return this.#onErrorFrame(sub, f);
      case "subscribed":
        return sub && this.#onSubscribed(sub);
      case "snapshot":
        return sub && this.#onSnapshot(sub, f);
      case "event":
        return sub && this.#onEvent(sub, f);
      case "resync_required":
        return sub && this.#resync(sub, f.reason, "ws");
      default:
        return undefined; // unsubscribed, and ops of later versions
    }
  }

  #onWelcome(f) {
    this.#disarm("connect");
    this.#live = true;
    this.#attempt = 0;
    this.#retryInMs = null;
    this.#head = f.position ? parsePosition(f.position) : null;
    this.#heartbeatMs = f.heartbeat_ms > 0 ? f.heartbeat_ms : 15000;
    this.#userId = f.user_id ?? null;
    this.#stopPolling();
    for (const sub of this.#subs.values()) this.#sendSubscribe(sub);
    this.#armWatchdog();
    this.#ping();
    this.#setState("live");
    this.emit("welcome", f);
  }

  #sendSubscribe(sub) {
    sub.status = "pending";
    this.#send(subscribeFrame(sub));
  }

  #unsubscribe(sub) {
    if (!this.#subs.delete(sub.id)) return;
    if (this.#live) this.#send({ op: "unsubscribe", id: sub.id });
  }

  #onSubscribed(sub) {
    sub.status = "active";
    // "now" has no position to resume from yet: the head at connect time is a safe one.
    if (!sub.position && sub.start === "now" && sub.privateTopics.length && this.#head) {
      sub.position = { ...this.#head };
    }
  }

  #onSnapshot(sub, f) {
    sub.status = "active";
    for (const [topic, rows] of Object.entries(f.rows ?? {})) sub.store.replace(topic, rows, f.position);
    sub.position = parsePosition(f.position);
    sub.emit("snapshot", f);
  }

  #onEvent(sub, f) {
    if (sub.status !== "active") return; // frames of a replaced subscription still in flight
    const p = sub.position;
    if (sub.seesEverything && p && p.epoch === f.epoch && f.seq > p.seq + 1) {
      this.#sendSubscribe(sub); // a gap: resume from the last applied change
      return;
    }
    this.#apply(sub, f);
  }

  /** Apply a change once (WebSocket and polling alike); false if already applied. */
  #apply(sub, ev) {
    const p = sub.position;
    if (p && p.epoch !== ev.epoch) {
      this.#resync(sub, "epoch_changed", "client");
      return false;
    }
    if (p && ev.seq <= p.seq) return false;
    sub.store.apply(ev);
    sub.position = { epoch: ev.epoch, seq: ev.seq };
    sub.emit("event", ev);
    return true;
  }

  /** The position cannot be served: start over with a snapshot (now, or at the next connect). */
  #resync(sub, reason, source) {
    sub.position = null;
    sub.start = "snapshot";
    sub.emit("resync", { reason, source });
    if (this.#live) this.#sendSubscribe(sub);
    else sub.status = "pending";
  }

  #onHeartbeat(f) {
    if (!f.position) return;
    const pos = parsePosition(f.position);
    this.#head = pos;
    // Every matching change at or below it was delivered: a filtered subscriber may resume there.
    for (const sub of this.#subs.values()) {
      if (sub.status === "active" && isAhead(pos, sub.position)) sub.position = { ...pos };
    }
  }

  #onPong(f) {
    if (typeof f.ts !== "number") return;
    this.#latencyMs = this.#o.now() - f.ts;
    this.emit("state", this.status());
  }

  #onMarket(f) {
    for (const sub of this.#subs.values()) {
      if (sub.topics.includes(f.topic)) sub.emit("market", f);
    }
  }

  #onErrorFrame(sub, f) {
    if (sub?.emit("error", f)) return;
    this.#emitError(new TradewireError(f.message ?? f.code, f.code, { id: f.id ?? null, frame: f }));
  }

  #emitError(err) {
    if (!this.emit("error", err)) console.warn("tradewire:", err.code ?? "", err.message ?? err);
  }

  // --- fallback polling -------------------------------------------------------------

  #startPolling() {
    if (this.#polling || this.#stopped) return;
    this.#polling = true;
    const wait = this.#lastPollAt + this.#o.pollIntervalMs - this.#o.now();
    this.#arm("poll", wait, () => this.#pollRound());
  }

  #stopPolling() {
    this.#polling = false;
    this.#pollGen++;
    this.#disarm("poll");
    this.#abort?.abort();
    this.#abort = null;
  }

  /** One polling round: each subscription with private topics and a position, in turn. */
  async #pollRound() {
    const gen = this.#pollGen;
    this.#lastPollAt = this.#o.now();
    this.#abort = typeof AbortController === "function" ? new AbortController() : null;
    for (const sub of [...this.#subs.values()]) {
      try {
        await this.#pollSub(sub, gen);
      } catch (err) {
        if (gen !== this.#pollGen) return;
        this.#emitError(asPollError(err));
      }
      if (gen !== this.#pollGen) return;
    }
    this.#arm("poll", this.#o.pollIntervalMs, () => this.#pollRound());
  }

  async #pollSub(sub, gen) {
    for (let page = 0; page < this.#o.pollMaxPages; page++) {
      if (!sub.position || !sub.privateTopics.length || !this.#subs.has(sub.id)) return;
      if (this.#needsToken()) await this.refresh();
      const res = await this.#o.fetch(this.#changesUrl(sub), {
        headers: { authorization: `Bearer ${this.#token}` },
        signal: this.#abort?.signal,
      });
      if (gen !== this.#pollGen) return;
      if (res.status === 409) return this.#resync(sub, "resync_required", "poll");
      if (res.status === 401) this.#tokenStale = Boolean(this.#o.refreshToken);
      if (!res.ok) {
        throw new TradewireError(`polling failed: HTTP ${res.status}`, "poll_failed", { status: res.status });
      }
      const body = await res.json();
      if (gen !== this.#pollGen) return;
      for (const ev of body.events ?? []) this.#apply(sub, ev);
      // The last seq scanned, past non-matching changes too.
      const scanned = body.position ? parsePosition(body.position) : null;
      if (isAhead(scanned, sub.position)) sub.position = scanned;
      if (!body.more) return;
    }
  }

  #changesUrl(sub) {
    const q = new URLSearchParams({
      since: positionText(sub.position),
      topics: sub.privateTopics.join(","),
      limit: String(this.#o.pollLimit),
    });
    if (sub.where) q.set("where", JSON.stringify(sub.where));
    return `${this.#o.httpUrl}/v1/changes?${q}`;
  }
}
