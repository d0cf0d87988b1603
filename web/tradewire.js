// Tradewire browser client (minimal; see docs/PROTOCOL.md).
// Usage: const tw = new Tradewire({url, token}); tw.subscribe(["*"], {onEvent, onSnapshot});
// Keeps one connection, resumes from the last applied (epoch, seq) after a reconnect, and
// backs off with full jitter as the close codes say.

const NO_RETRY = new Set([1009, 4001, 4003, 4400]);

export class Tradewire {
  constructor({ url, token, onState = () => {} }) {
    this.url = url;
    this.token = token;
    this.onState = onState;
    this.subs = new Map();
    this.attempt = 0;
    this.connect();
  }

  connect() {
    this.onState("connecting");
    const ws = new WebSocket(`${this.url}?token=${encodeURIComponent(this.token)}`);
    this.ws = ws;
    ws.onopen = () => { this.attempt = 0; };
    ws.onmessage = (m) => this.handle(JSON.parse(m.data));
    ws.onclose = (e) => {
      this.onState("offline", e.code);
      if (NO_RETRY.has(e.code)) return;
      const delay = e.code === 4008 ? 0 : Math.random() * Math.min(30000, 1000 * 2 ** this.attempt++);
      setTimeout(() => this.connect(), delay);
    };
  }

  handle(f) {
    if (f.op === "welcome") {
      this.onState("live");
      for (const [id, s] of this.subs) this.send(this.subscribeFrame(id, s));
      return;
    }
    const s = this.subs.get(f.id);
    if (f.op === "snapshot" && s) { s.position = f.position; s.onSnapshot?.(f); }
    else if (f.op === "event" && s) {
      if (s.position && f.epoch === s.position.epoch && f.seq <= s.position.seq) return; // already applied
      s.position = { epoch: f.epoch, seq: f.seq };
      s.onEvent?.(f);
    } else if (f.op === "resync_required" && s) { s.position = null; this.send(this.subscribeFrame(f.id, s)); }
    else if (f.op === "error") console.warn("tradewire:", f.code, f.message);
  }

  subscribeFrame(id, s) {
    return { op: "subscribe", id, topics: s.topics, ...(s.where ? { where: s.where } : {}), from: s.position ?? "snapshot" };
  }

  subscribe(topics, { where, onEvent, onSnapshot } = {}) {
    const id = `s${this.subs.size + 1}`;
    const s = { topics, where, onEvent, onSnapshot, position: null };
    this.subs.set(id, s);
    if (this.ws.readyState === WebSocket.OPEN) this.send(this.subscribeFrame(id, s));
    return id;
  }

  send(frame) {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }
}
