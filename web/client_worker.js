// The SSH client's worker: loads /pkg/client_wasm.js and runs its sessions here, off
// the page's main thread, so a bulk transfer never competes with the UI (and a busy UI
// never stalls a transfer). The page talks to it through wasm.js; the messages are
// described in worker_protocol.js.

import { MAX_IN_FLIGHT, errorToWire, snapshotStore } from "./worker_protocol.js";

/** Sessions and forwards by the ids the page knows them by. */
const sessions = new Map();
const forwards = new Map();
/** Questions (host key, prompt) waiting for the page's answer, by id. */
const asks = new Map();
let nextAsk = 1;
let nextForward = 1;

const post = (message) => self.postMessage(message);

// Anything uncaught (a bug here, a panic in the wasm) leaves the client in a state no one
// can vouch for: let it reach the page, which ends the worker and says so.
self.addEventListener("unhandledrejection", (event) => {
  throw event.reason instanceof Error ? event.reason : new Error(String(event.reason));
});
self.addEventListener("messageerror", () => {
  throw new Error("a message from the page could not be read");
});

const loaded = (async () => {
  try {
    // Relative to this worker, as in wasm.js: the page and the npm package lay out alike.
    const mod = await import("./pkg/client_wasm.js");
    await mod.default();
    post({ type: "ready" });
    return mod;
  } catch (err) {
    post({ type: "load-error", message: errorToWire(err).message });
    return null;
  }
})();

/** Asks the page (callback `kind` of session `session`) and waits for its answer. */
function ask(session, kind, args, refused) {
  if (asks.size >= MAX_IN_FLIGHT) return Promise.resolve(refused);
  const id = nextAsk++;
  return new Promise((resolve) => {
    asks.set(id, resolve);
    post({ type: "ask", id, session, kind, args });
  });
}

/** Frees a wasm handle once nothing awaits it (freeing a borrowed one throws). */
function retire(handle) {
  handle.closed = true;
  if (handle.busy === 0) {
    try {
      handle.obj.free();
    } catch {
      // Already gone.
    }
  }
}

/** Runs `fn(obj)` on a live handle, keeping it from being freed meanwhile. */
async function use(handle, fn) {
  handle.busy += 1;
  try {
    return await fn(handle.obj);
  } finally {
    handle.busy -= 1;
    if (handle.closed) retire(handle);
  }
}

function endSession(id, reason) {
  const handle = sessions.get(id);
  if (!handle) return;
  sessions.delete(id);
  for (const fid of handle.forwards) {
    const fwd = forwards.get(fid);
    forwards.delete(fid);
    if (fwd) retire(fwd);
  }
  retire(handle);
  post({ type: "closed", session: id, reason });
}

const handlers = {
  async connect(mod, { id, options, knownHosts, asksHostKey, asksPrompt, asksState }) {
    let closedEarly = null;
    const session = await mod.connect({
      ...options,
      knownHosts: knownHosts && snapshotStore(knownHosts.text, (before, after) => post({ type: "known-hosts", before, after })),
      onHostKey: asksHostKey ? (...args) => ask(id, "hostKey", [args[0], args[1], args[2], Array.from(args[3] ?? [], String)], false) : undefined,
      onPrompt: asksPrompt ? (request) => ask(id, "prompt", [request], null) : undefined,
      onStateChange: asksState ? (state) => post({ type: "state", session: id, state: { ...state } }) : undefined,
      onClose: (reason) => {
        if (sessions.has(id)) endSession(id, String(reason ?? ""));
        else closedEarly = String(reason ?? "");
      },
    });
    sessions.set(id, { obj: session, busy: 0, closed: false, forwards: new Set() });
    const value = { hostKeyFingerprint: session.hostKeyFingerprint, hostKeyAlgorithm: session.hostKeyAlgorithm };
    // The page hears of an end before or after the reply alike.
    if (closedEarly !== null) endSession(id, closedEarly);
    return value;
  },

  async forward(mod, { session, spec, options }) {
    const handle = sessions.get(session);
    if (!handle) throw Object.assign(new Error("the session is closed"), { code: "closed" });
    const fwd = await use(handle, (s) => s.forward(spec, options ?? undefined));
    const fid = nextForward++;
    if (!sessions.has(session)) {
      fwd.free();
      throw Object.assign(new Error("the session is closed"), { code: "closed" });
    }
    forwards.set(fid, { obj: fwd, busy: 0, closed: false });
    handle.forwards.add(fid);
    return { forward: fid, listen: fwd.listen, spec: fwd.spec, kind: fwd.kind, webUrl: fwd.webUrl ?? null };
  },

  async stats(mod, { forward }) {
    const handle = forwards.get(forward);
    // The web URL too: a session the relay did not resume (it restarted) gets a new one.
    return handle ? use(handle, (f) => ({ ...f.stats(), webUrl: f.webUrl ?? null })) : null;
  },

  async closeForward(mod, { session, forward }) {
    const handle = forwards.get(forward);
    if (!handle) return null;
    await use(handle, (f) => f.close());
    forwards.delete(forward);
    sessions.get(session)?.forwards.delete(forward);
    retire(handle);
    return null;
  },

  async closeSession(mod, { session }) {
    const handle = sessions.get(session);
    if (handle) await use(handle, (s) => s.close());
    return null;
  },

  async parseForwardSpec(mod, { text }) {
    return mod.parseForwardSpec(text);
  },

  async parseDynamicSpec(mod, { text }) {
    return mod.parseDynamicSpec(text);
  },

  async parseSshCommand(mod, { text }) {
    return mod.parseSshCommand(text);
  },

  /** Answers with the writes, [before, after], for the page to apply and report on. */
  async forgetHostKey(mod, { target, algorithm, relay, knownHosts }) {
    const writes = [];
    const store = snapshotStore(knownHosts, (before, after) => writes.push([before, after]));
    mod.forgetHostKey(target, algorithm, relay, store);
    return writes;
  },
};

self.addEventListener("message", (event) => {
  const request = event.data;
  if (request?.op === "answer") {
    const resolve = asks.get(request.id);
    asks.delete(request.id);
    resolve?.(request.value);
    return;
  }
  const handler = handlers[request?.op];
  // The page sends only what it knows; anything else is a bug on one side or the other.
  if (!handler) throw new Error(`the page sent an unknown request: ${String(request?.op)}`);
  loaded
    .then((mod) => {
      if (!mod) throw new Error("The SSH client could not be loaded.");
      return handler(mod, request);
    })
    .then(
      (value) => post({ type: "reply", id: request.id, value }),
      (err) => post({ type: "reply", id: request.id, error: errorToWire(err) }),
    );
});
