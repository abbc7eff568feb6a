// Words and numbers the page shows. No DOM here: tested by web/test/text.test.js.

/** The message of anything thrown: an Error, a wasm error object, a string. */
export function messageOf(err) {
  if (err instanceof Error && err.message) return err.message;
  if (err && typeof err === "object" && typeof err.message === "string" && err.message) return err.message;
  if (typeof err === "string" && err) return err;
  return String(err ?? "unknown error");
}

/** 1023 -> "1023 B", 1536 -> "1.5 KiB", 150 MiB -> "150 MiB". */
export function formatBytes(n) {
  const v = Number(n) || 0;
  if (v < 1024) return `${v} B`;
  const units = ["KiB", "MiB", "GiB", "TiB", "PiB"];
  let x = v / 1024;
  let i = 0;
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024;
    i += 1;
  }
  return `${x < 100 ? x.toFixed(1) : Math.round(x)} ${units[i]}`;
}

/**
 * A forward's numbers as the row shows them, from `fwd.stats()` (any field may be missing):
 * the values, and one line of text that changes exactly when the row must be redrawn.
 */
export function statsView(st) {
  const view = {
    connections: Number(st?.connections) || 0,
    active: Number(st?.active) || 0,
    up: formatBytes(st?.bytesUp),
    down: formatBytes(st?.bytesDown),
    failures: Number(st?.failures) || 0,
    lastError: st?.lastError || "",
  };
  let text = `connections ${view.connections} · active ${view.active} · up ${view.up} · down ${view.down}`;
  if (view.failures > 0) text += ` · failed ${view.failures}: ${view.lastError}`;
  view.text = text;
  return view;
}

/** "1 forward" / "2 forwards". */
export function forwardsWord(count) {
  return `${count} forward${count === 1 ? "" : "s"}`;
}

/**
 * The status line for a session that reconnects by itself, for its `state` (from the
 * client's onStateChange), or null to leave the line as it is. `dropReason`: why the
 * link dropped, kept on the line once it is back.
 */
export function linkStateText(state, username, target, dropReason) {
  switch (state?.state) {
    case "reconnecting": {
      const seconds = Math.max(0, Number(state.nextTryMs) || 0) / 1000;
      const why = state.reason ? `: ${String(state.reason)}` : "";
      return {
        text: `reconnecting (attempt ${Number(state.attempt) || 1}, next try in ${seconds.toFixed(1)} s)${why}`,
        kind: "reconnecting",
      };
    }
    case "restored": {
      const why = dropReason ? ` after: ${dropReason}` : "";
      return {
        text: `connected again as ${username}@${target}${why}; forwards restored on the same ports`,
        kind: "connected",
      };
    }
    default:
      return null;
  }
}

/**
 * "to a:1, b:2" for the destinations of a SOCKS forward's open connections (the first
 * `most`), and how many more there are.
 */
export function liveText(live, most = 4) {
  const shown = live.slice(0, most).join(", ");
  const more = live.length - most;
  return more > 0 ? `to ${shown} and ${more} more` : `to ${shown}`;
}
