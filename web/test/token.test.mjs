// Login, token refresh before expiry (sent on the live connection) and after close 4009.

import { test } from "node:test";
import assert from "node:assert/strict";
import { login, TradewireError } from "../tradewire.js";
import { fakeFetch, fixture, goLive, harness, keepAlive } from "./fakes.mjs";

const HOUR = 3_600_000;

test("login posts the credentials and returns token, user_id and expires_at", async () => {
  const answer = { token: "tok-1", user_id: "u_alice", expires_at: 1732233600000 };
  const http = fakeFetch(() => ({ status: 200, body: answer }));
  const got = await login({ username: "alice", password: "pw", baseUrl: "http://tw.test", fetch: http.fetch });
  assert.deepEqual(got, answer);
  const [call] = http.calls;
  assert.equal(call.url.href, "http://tw.test/v1/auth/login");
  assert.equal(call.init.method, "POST");
  assert.deepEqual(JSON.parse(call.init.body), { username: "alice", password: "pw" });
});

test("a refused login rejects with the server's error", async () => {
  const refused = { error: { code: "unauthorized", message: "bad credentials" } };
  const http = fakeFetch(() => ({ status: 401, body: refused }));
  await assert.rejects(login({ username: "alice", password: "no", fetch: http.fetch }), (err) => {
    assert.ok(err instanceof TradewireError);
    assert.equal(err.code, "unauthorized");
    assert.equal(err.status, 401);
    assert.equal(err.message, "bad credentials");
    return true;
  });
  assert.equal(http.calls[0].url.href, "http://page.test/v1/auth/login", "relative to the page by default");
});

test("the token is refreshed a minute before expiry and sent on the live connection", async () => {
  let calls = 0;
  const refreshToken = async () => ({ token: `tok-${++calls + 1}`, expires_at: h.clock.now + HOUR });
  const h = harness({ refreshToken });
  h.client.connect();
  const ws = goLive(h.net);
  await keepAlive(h.clock, ws, HOUR - 60_000 - 1);
  assert.equal(calls, 0, "not yet");
  await h.clock.advance(1);
  assert.equal(calls, 1, "refreshed 60 s before expiry");
  const auth = ws.frames("auth");
  assert.equal(auth.length, 2);
  assert.deepEqual(Object.keys(auth[1]), Object.keys(fixture("client", "auth")));
  assert.deepEqual(auth[1], { op: "auth", token: "tok-2" });
  assert.equal(h.client.token, "tok-2");
  assert.equal(h.net.sockets.length, 1, "the connection stays");

  await keepAlive(h.clock, ws, HOUR - 60_000);
  assert.equal(calls, 2, "and again before the new token expires");
  h.client.close();
});

test("a short-lived token is refreshed at half its life, not in a loop", async () => {
  let calls = 0;
  const h = harness({
    expiresAt: undefined,
    token: undefined,
    refreshToken: async () => ({ token: `tok-${++calls}`, expires_at: h.clock.now + 20_000 }),
  });
  h.client.connect();
  await h.clock.advance(0);
  assert.equal(calls, 1, "no token at all: fetched before connecting");
  h.net.last.open();
  assert.deepEqual(h.net.last.sent[0], { op: "auth", token: "tok-1" });
  await h.clock.advance(9_999);
  assert.equal(calls, 1);
  await h.clock.advance(1);
  assert.equal(calls, 2);
  h.client.close();
});

test("the expiry comes from the JWT's exp claim when not given", async () => {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const clockStart = 1732230000000;
  const jwt = `${b64({ alg: "HS256" })}.${b64({ sub: "u_alice", exp: clockStart / 1000 + 600 })}.sig`;
  let calls = 0;
  const h = harness({ token: jwt, expiresAt: undefined, refreshToken: async () => `tok-${++calls}` });
  h.client.connect();
  await h.clock.advance(540_000 - 1);
  assert.equal(calls, 0);
  await h.clock.advance(1);
  assert.equal(calls, 1, "refreshed 60 s before exp");
  h.client.close();
});

test("close 4009: refresh the token, reconnect at once with it, resume", async () => {
  let calls = 0;
  const h = harness({ refreshToken: async () => `tok-${++calls + 1}` });
  const sub = h.client.subscribe(["*"]);
  h.client.connect();
  const ws = goLive(h.net);
  ws.receive({ ...fixture("server", "subscribed"), id: sub.id });
  ws.receive({ ...fixture("server", "snapshot"), id: sub.id });
  ws.receive({ ...fixture("server", "event"), id: sub.id }); // 42
  ws.drop(4009, "token_expired");
  assert.equal(h.client.status().state, "connecting");
  await h.clock.advance(0);
  assert.equal(calls, 1, "refreshed before reconnecting");
  const ws2 = goLive(h.net);
  assert.deepEqual(ws2.sent[0], { op: "auth", token: "tok-2" });
  assert.deepEqual(ws2.frames("subscribe")[0].from, { epoch: "e1", seq: 42 });
  h.client.close();
});

test("a failed refresh after 4009 backs off and tries again", async () => {
  let calls = 0;
  const h = harness({
    random: () => 0.5,
    refreshToken: async () => {
      if (++calls === 1) throw new Error("auth server down");
      return "tok-2";
    },
  });
  h.client.connect();
  goLive(h.net);
  h.net.last.drop(4009);
  await h.clock.advance(0);
  assert.equal(calls, 1);
  assert.equal(h.errors[0].code, "refresh_failed");
  assert.equal(h.client.status().state, "offline");
  assert.equal(h.net.sockets.length, 1, "no connection with the expired token");
  await h.clock.advance(500);
  assert.equal(calls, 2);
  h.net.last.open();
  assert.deepEqual(h.net.last.sent[0], { op: "auth", token: "tok-2" });
  h.client.close();
});

test("setToken while live sends it at once", () => {
  const h = harness();
  h.client.connect();
  const ws = goLive(h.net);
  h.client.setToken("tok-9", h.clock.now + HOUR);
  assert.deepEqual(ws.sent.at(-1), { op: "auth", token: "tok-9" });
  h.client.close();
});
