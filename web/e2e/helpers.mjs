// One helper for every browser test: a real tradewire server (fresh temp data dir, free
// port, demo users and the simulator) and a real Debian chromium driven by playwright-core.
// Nothing here sleeps: every wait is a condition with a deadline.
//
//   const app = await spawnApp({ env: { TRADEWIRE_HEARTBEAT_MS: "1000" } });
//   const page = await app.login("alice");
//   …
//   await app.close();

import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, mkdirSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

const ROOT = resolve(import.meta.dirname, "../..");
export const BINARY = process.env.TRADEWIRE_BIN ?? join(ROOT, "target/debug/tradewire");
export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
export const ARTIFACTS = process.env.TRADEWIRE_ARTIFACTS ?? join(ROOT, "artifacts");
export const PASSWORDS = { alice: "alice-demo", bob: "bob-demo" };

/** A port nobody listens on right now. */
async function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer().once("error", fail);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });
}

/** Poll `fn` until it returns a truthy value; throw with `what` after `timeoutMs`. */
export async function waitFor(fn, { timeoutMs = 10_000, intervalMs = 50, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last.message}` : ""}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** A running `tradewire serve` on `port` with `dataDir`; `stop()` sends SIGTERM and waits. */
export class Server {
  constructor({ dataDir, port, env }) {
    Object.assign(this, { dataDir, port, env, proc: null, log: "" });
    this.base = `http://127.0.0.1:${port}`;
  }

  async start() {
    this.proc = spawn(BINARY, ["--data-dir", this.dataDir, "serve", "--listen", `127.0.0.1:${this.port}`], {
      env: { ...process.env, TRADEWIRE_SIM_TICKS_PER_SECOND: "10", RUST_LOG: "warn", ...this.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const exited = new Promise((r) => this.proc.once("exit", (code, sig) => r({ code, sig })));
    this.exited = exited;
    for (const s of [this.proc.stdout, this.proc.stderr]) s.on("data", (d) => (this.log = (this.log + d).slice(-20_000)));
    let gone = null;
    exited.then((e) => (gone = e));
    await waitFor(async () => {
      if (gone) throw new Error(`server exited (${JSON.stringify(gone)}):\n${this.log}`);
      return (await fetch(`${this.base}/readyz`)).status === 200;
    }, { timeoutMs: 20_000, what: `GET ${this.base}/readyz == 200` }).catch((err) => {
      if (gone) throw err;
      throw new Error(`${err.message}\n${this.log}`);
    });
    return this;
  }

  /** SIGTERM, then wait (with a deadline) for the process to exit. */
  async stop() {
    if (!this.proc || this.proc.exitCode != null || this.proc.signalCode != null) return;
    this.proc.kill("SIGTERM");
    const timer = setTimeout(() => this.proc.kill("SIGKILL"), 10_000);
    await this.exited;
    clearTimeout(timer);
  }

  /** Run SQL through a separate `sqlite3` connection to the server's database file. */
  sql(statement) {
    return execFileSync("sqlite3", ["-cmd", ".timeout 5000", join(this.dataDir, "tradewire.db"), statement], { encoding: "utf8" });
  }

  /** POST /v1/auth/login; the token. */
  async token(user) {
    const res = await fetch(`${this.base}/v1/auth/login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: user, password: PASSWORDS[user] }),
    });
    if (!res.ok) throw new Error(`login ${user}: HTTP ${res.status}`);
    return (await res.json()).token;
  }

  /** A JSON API call with `token`; the parsed body. */
  async api(token, method, path, body) {
    const res = await fetch(`${this.base}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: HTTP ${res.status} ${text}`);
    return text ? JSON.parse(text) : null;
  }
}

/** The server and a browser for one test file. */
export async function spawnApp({ env = {}, viewport = { width: 1280, height: 800 } } = {}) {
  const dataDir = mkdtempSync(join(tmpdir(), "tradewire-e2e-data-"));
  const profile = mkdtempSync(join(tmpdir(), "tradewire-e2e-chromium-"));
  const server = await new Server({ dataDir, port: await freePort(), env }).start();
  // A fresh profile directory per file (playwright passes it as --user-data-dir).
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  const pageErrors = [];
  return {
    server,
    context,
    pageErrors,
    /** A new page logged in as `user`, with the dashboard showing and live. */
    async login(user, page) {
      page ??= await context.newPage();
      page.on("pageerror", (err) => pageErrors.push(err));
      // Whatever the Content Security Policy blocks (a script, a style, a connection) fails
      // the test like an uncaught error: the page would silently miss it.
      page.on("console", (msg) => {
        if (msg.type() === "error" && /Content Security Policy/i.test(msg.text())) pageErrors.push(new Error(msg.text()));
      });
      await page.goto(server.base + "/");
      await page.getByTestId("login-username").fill(user);
      await page.getByTestId("login-password").fill(PASSWORDS[user]);
      await page.getByTestId("login-submit").click();
      await page.getByTestId("dashboard").waitFor({ state: "visible", timeout: 10_000 });
      await waitForState(page, "live");
      return page;
    },
    async close() {
      await context.close().catch(() => {});
      await server.stop();
      rmSync(dataDir, { recursive: true, force: true });
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Wait until the connection indicator shows `state` (live, connecting, reconnecting, offline). */
export async function waitForState(page, state, timeout = 10_000) {
  await page.waitForFunction(
    (s) => document.querySelector('[data-testid="conn-indicator"]')?.dataset.state === s,
    state,
    { timeout, polling: 50 },
  );
}

/** The text of every element matching `testid` in the page. */
export async function texts(page, testid) {
  return page.getByTestId(testid).allTextContents();
}

export function artifactPath(name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  return join(ARTIFACTS, name);
}
