// The header's connection indicator: green live, amber connecting/reconnecting, red offline.
// Its tooltip shows the age of the last message and the measured latency, kept fresh once a
// second from the client's status().

import { schedule, setText } from "../dom.js";

const LABELS = { live: "Live", connecting: "Connecting", reconnecting: "Reconnecting", offline: "Offline" };

/** The indicator's colour class for a client state. */
export function indicatorState({ state, attempt }, everLive) {
  if (state === "live") return "live";
  if (state === "connecting") return everLive || attempt > 0 ? "reconnecting" : "connecting";
  return "offline"; // offline, fatal, closed
}

export function mount(root, tw) {
  const el = root.querySelector('[data-testid="conn-indicator"]');
  const label = el.querySelector('[data-testid="conn-label"]');
  let everLive = false;
  el.hidden = false;

  const render = () => {
    const s = tw.status();
    if (s.state === "live") everLive = true;
    const state = indicatorState(s, everLive);
    el.dataset.state = state;
    setText(label, LABELS[state]);
    const age = s.lastMessageAgeMs == null ? "—" : `${(s.lastMessageAgeMs / 1000).toFixed(1)} s`;
    const latency = s.latencyMs == null ? "—" : `${Math.round(s.latencyMs)} ms`;
    const retry = s.state !== "live" && s.retryInMs != null ? `\nnext attempt in ${(s.retryInMs / 1000).toFixed(1)} s` : "";
    el.title = `${LABELS[state]}\nlast message: ${age} ago\nlatency: ${latency}${retry}`;
  };
  tw.on("state", () => schedule(render));
  const timer = setInterval(() => schedule(render), 1000);
  render();
  return { destroy: () => clearInterval(timer) };
}
