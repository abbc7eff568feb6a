// @ts-check
// A minimal embedder of the tabtunnel client package: log in, add forwards, show where each
// listens and how much it carried. Type-checked with tsc (tsconfig.json) against the
// package's index.d.ts; `cargo xtask package` lays it out beside the package.

import { loadClient } from "./tabtunnel-client/index.js";

/** @typedef {import("./tabtunnel-client/index.js").Forward} Forward */
/** @typedef {import("./tabtunnel-client/index.js").Session} Session */

/** @param {string} id */
function byId(id) {
  const element = document.getElementById(id);
  if (!element) throw new Error(`#${id} is missing`);
  return element;
}

/** @param {string} id */
const valueOf = (id) => /** @type {HTMLInputElement} */ (byId(id)).value;

const status = byId("status");
/** @param {string} text */
const say = (text) => {
  status.textContent = text;
};

/** @param {unknown} err */
function describe(err) {
  const code = err && typeof err === "object" && "code" in err ? ` (${String(err.code)})` : "";
  return `${err instanceof Error ? err.message : String(err)}${code}`;
}

const client = await loadClient({ onStop: (reason) => say(reason) }).catch((err) => {
  say(describe(err));
  return null;
});

/** @type {Session | null} */
let session = null;
/** @type {Forward[]} */
const forwards = [];

if (client) {
  say("Ready.");
  byId("login").addEventListener("submit", async (event) => {
    event.preventDefault();
    say("Connecting…");
    try {
      session = await client.connect({
        target: valueOf("target"),
        username: valueOf("username"),
        password: valueOf("password"),
        onHostKey: (fingerprint, algorithm) => confirm(`Trust ${algorithm} key ${fingerprint}?`),
        onClose: (reason) => say(`Session closed: ${reason}`),
      });
      say(`Connected (host key ${session.hostKeyFingerprint}).`);
      byId("login").hidden = true;
      byId("add").hidden = false;
    } catch (err) {
      say(`Could not connect: ${describe(err)}`);
    }
  });
  byId("add").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!session) return;
    try {
      const forward = await session.forward(valueOf("spec"));
      forwards.push(forward);
      const item = document.createElement("li");
      item.className = "forward";
      item.dataset.listen = forward.listen;
      byId("forwards").append(item);
      say(`Forwarding ${forward.spec} at ${forward.listen}.`);
    } catch (err) {
      say(`Could not forward: ${describe(err)}`);
    }
  });
  // stats() answers at once with the latest numbers and asks the worker for new ones.
  setInterval(() => {
    const items = byId("forwards").children;
    forwards.forEach((forward, i) => {
      const { connections, active, bytesUp, bytesDown } = forward.stats();
      const item = items[i];
      if (item instanceof HTMLElement) {
        item.dataset.bytesUp = String(bytesUp);
        item.dataset.bytesDown = String(bytesDown);
        item.textContent = `${forward.listen} → ${forward.spec}: ${connections} connections (${active} open), ${bytesUp} B up, ${bytesDown} B down`;
      }
    });
  }, 250);
}
