// The server-health badge: the public `system` topic on the shared connection (pushed when
// a component fails or comes back, so nothing polls). "OK" while every component is up;
// "DEGRADED" naming what is down; the tooltip lists each component, restarts and lag.

import { setText } from "../dom.js";

export function mount(root, { tw }) {
  const badge = root.querySelector('[data-testid="health-badge"]');
  const sub = tw.subscribe(["system"]);
  sub.on("market", (f) => {
    if (f.topic !== "system") return;
    const { status, components = {} } = f.data ?? {};
    const down = Object.entries(components).filter(([, c]) => c.state === "down").map(([name]) => name);
    badge.hidden = false;
    badge.dataset.state = status === "ok" ? "ok" : "degraded";
    setText(badge, status === "ok" ? "SYSTEM OK" : `DEGRADED: ${down.join(", ")}`);
    badge.title = Object.entries(components)
      .map(([name, c]) => {
        const extra = [];
        if (c.cause) extra.push(c.cause);
        if (c.restarts) extra.push(`${c.restarts} restart(s), last: ${c.last_failure}`);
        if (name === "pump" && c.lag_ms !== undefined) extra.push(`lag ${c.lag_ms} ms`);
        return `${name}: ${c.state}${extra.length ? ` (${extra.join("; ")})` : ""}`;
      })
      .join("\n");
  });
  return { destroy: () => sub.unsubscribe() };
}
