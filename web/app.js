// The dashboard's entry point: login and session, then one Tradewire connection with one
// subscription to all of the user's topics ("*": every change in seq order) and one for the
// market tickers. Each panel renders from the subscription's row store; an event marks the
// panels of its topic dirty and they render once in the next animation frame.

import { Tradewire, login } from "/tradewire.js";
import { Api } from "./api.js";
import { h, installFlashCleanup, schedule } from "./dom.js";
import * as connection from "./panels/connection.js";
import * as stats from "./panels/stats.js";
import * as bots from "./panels/bots.js";
import * as portfolios from "./panels/portfolios.js";
import * as positions from "./panels/positions.js";
import * as orders from "./panels/orders.js";
import * as signals from "./panels/signals.js";
import * as risk from "./panels/risk.js";
import * as watchlist from "./panels/watchlist.js";
import * as health from "./panels/health.js";

const SESSION_KEY = "tradewire.session";
const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);

/** A short message in the corner; `kind` is "info" or "error". */
function notify(message, kind = "info") {
  const toast = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  $("toasts").append(toast);
  setTimeout(() => toast.remove(), kind === "error" ? 6000 : 3000);
}

function saveSession(session) {
  try {
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  } catch {
    // storage disabled: the session lasts as long as the page
  }
}

function loadSession() {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? "null");
    return s && s.expires_at - Date.now() > 60_000 ? s : null;
  } catch {
    return null;
  }
}

function showLogin(message = "") {
  document.getElementById("dashboard").hidden = true;
  document.getElementById("login-view").hidden = false;
  $("logout").hidden = true;
  $("conn-indicator").hidden = true;
  $("user-name").textContent = "";
  $("login-error").textContent = message;
  $("login-username").focus();
}

/**
 * Start the dashboard for a logged-in session. `credentials` (kept in memory only) let the
 * client refresh the token before it expires; without them an expired session logs out.
 */
function startDashboard(session, credentials = null) {
  document.getElementById("login-view").hidden = true;
  document.getElementById("dashboard").hidden = false;
  $("user-name").textContent = session.username;
  $("logout").hidden = false;

  const tw = new Tradewire({
    token: session.token,
    expiresAt: session.expires_at,
    refreshToken: credentials
      ? async () => {
          const fresh = await login(credentials);
          saveSession({ ...session, token: fresh.token, expires_at: fresh.expires_at });
          return fresh;
        }
      : undefined,
  });
  const api = new Api(() => tw.token);
  const sub = tw.subscribe(["*"]);
  const ctx = { tw, api, notify, store: sub.store };

  const conn = connection.mount(document, tw);
  health.mount(document, ctx);
  const panels = [stats, bots, portfolios, positions, orders, signals, risk].map((p) => p.mount(document, ctx));
  const byTopic = new Map();
  for (const panel of panels) {
    for (const topic of panel.topics) {
      if (!byTopic.has(topic)) byTopic.set(topic, []);
      byTopic.get(topic).push(panel.render);
    }
  }
  const renderAll = () => panels.forEach((p) => schedule(p.render));

  sub.on("snapshot", renderAll);
  sub.on("event", (ev) => (byTopic.get(ev.topic) ?? []).forEach(schedule));
  sub.on("resync", () => notify("Resynchronising: fetching a fresh snapshot…"));
  sub.on("error", (f) => notify(`Subscription error: ${f.message ?? f.code}`, "error"));
  tw.on("error", (err) => console.warn("tradewire:", err.code, err.message));
  tw.on("state", (s) => {
    if (s.state === "fatal" && (s.code === 4001 || s.code === 4009 || s.reason === "refresh_failed")) logout("Your session has expired. Please log in again.");
  });
  // Charts load last and apart: without them (or their library) every other panel still works.
  let charts = null;
  let pendingSymbol = null;
  watchlist.mount(document, {
    ...ctx,
    onSelect: (symbol) => (charts ? charts.select(symbol) : (pendingSymbol = symbol)),
  });
  import("./panels/charts.js")
    .then((m) => {
      charts = m.mount(document, ctx);
      panels.push(charts);
      for (const topic of charts.topics) byTopic.set(topic, [...(byTopic.get(topic) ?? []), charts.render]);
      schedule(charts.render);
      if (pendingSymbol) charts.select(pendingSymbol);
    })
    .catch((err) => notify(`Charts unavailable: ${err.message}`, "error"));
  renderAll();

  function logout(message = "") {
    tw.close();
    conn.destroy();
    sessionStorage.removeItem(SESSION_KEY);
    // A fresh page is the simplest way to drop every panel's state and listener.
    if (message) sessionStorage.setItem("tradewire.message", message);
    location.reload();
  }
  $("logout").onclick = () => logout();
  // For tests and debugging in the console.
  window.tradewire = { tw, sub };
}

async function onLogin(e) {
  e.preventDefault();
  const form = e.target;
  const credentials = { username: form.username.value.trim(), password: form.password.value };
  const button = $("login-submit");
  button.disabled = true;
  $("login-error").textContent = "";
  try {
    const { token, expires_at: expiresAt, user_id: userId } = await login(credentials);
    const session = { token, expires_at: expiresAt, user_id: userId, username: credentials.username };
    saveSession(session);
    form.reset();
    startDashboard(session, credentials);
  } catch (err) {
    $("login-error").textContent = err.status === 401 ? "Wrong username or password." : err.message;
  } finally {
    button.disabled = false;
  }
}

/** In demo mode the server lists the demo logins (`GET /v1/demo`); the login page shows
 * them. Outside demo mode it answers 404 and the page shows no passwords. */
async function showDemoLogins() {
  try {
    const response = await fetch("/v1/demo");
    if (!response.ok) return;
    const { users } = await response.json();
    const hint = $("demo-hint");
    const logins = users.flatMap((u, i) => [
      ...(i > 0 ? [", "] : []),
      h("code", {}, u.username),
      " / ",
      h("code", {}, u.password),
    ]);
    hint.replaceChildren("Demo users: ", ...logins);
    hint.hidden = false;
  } catch {
    // No demo logins to show.
  }
}

installFlashCleanup();
showDemoLogins();
$("login-form").addEventListener("submit", onLogin);
const saved = loadSession();
if (saved) startDashboard(saved);
else {
  showLogin(sessionStorage.getItem("tradewire.message") ?? "");
  sessionStorage.removeItem("tradewire.message");
}
