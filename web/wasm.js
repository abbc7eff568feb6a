// The SSH client, /pkg/client_wasm.js, run in a dedicated worker (client_worker.js) so
// a bulk transfer never competes with the page. This module gives the page the client's
// shape, asynchronously: connect(options) with the same callbacks, sessions with
// forward/close/closedReason, forwards with listen/spec/webUrl/stats/close, and errors with the
// same messages and `code`. The rest of the page still works if the client is missing,
// fails to start or stops: the user is told why.

import { messageOf } from "./text.js";
import {
  InFlight, KNOWN_HOSTS_KEY, NO_STATS, applyKnownHostsWrite, connectFields, errorFromWire, forwardOptions,
} from "./worker_protocol.js";
import { unsupportedReason } from "./wasm_support.js";

const WORKER_URL = new URL("./client_worker.js", import.meta.url); // beside this module: the page and the npm package alike

export class WasmClient {
  /**
   * Starts the worker at once. `onLoadError(text)` says, once, why the client could not
   * be loaded or why it stopped later.
   */
  constructor(onLoadError) {
    this.onLoadError = onLoadError;
    /** Why the worker is gone (a sentence for the user), or null while it runs. */
    this.stopped = null;
    this.requests = new InFlight();
    /** The worker said it loaded the wasm. */
    this.loaded = false;
    /** Sessions by id, from connect() until they end: { onClose, proxy, closedReason }. */
    this.sessions = new Map();
    /** Host-key and prompt callbacks of connecting sessions (and of live ones that reconnect), by session id. */
    this.callbacks = new Map();
    let loaded;
    let failed;
    this.ready = new Promise((resolve, reject) => {
      loaded = resolve;
      failed = reject;
    });
    this.ready.catch(() => {}); // reported through onLoadError
    this.started = { loaded, failed };
    this.module = {
      connect: (options) => this.connect(options),
      parseForwardSpec: (text) => this.request("parseForwardSpec", { text }),
      parseDynamicSpec: (text) => this.request("parseDynamicSpec", { text }),
      parseSshCommand: (text) => this.request("parseSshCommand", { text }),
      forgetHostKey: async (target, algorithm) => {
        const fields = { target, algorithm, relay: location.origin, knownHosts: readKnownHosts() };
        for (const [before, after] of await this.request("forgetHostKey", fields)) writeKnownHosts(before, after);
      },
    };
    const unsupported = unsupportedReason();
    if (unsupported) {
      this.stop(unsupported, { loading: true });
      return;
    }
    try {
      this.worker = new Worker(WORKER_URL, { type: "module" });
    } catch (err) {
      this.stop(messageOf(err));
      return;
    }
    this.worker.addEventListener("message", (event) => this.receive(event.data));
    this.worker.addEventListener("error", (event) => {
      event.preventDefault();
      this.stop(event.message || "its worker failed to start or stopped");
    });
    this.worker.addEventListener("messageerror", () => this.stop("a message from it could not be read"));
  }

  /** The client's functions, once loaded; rejects with a sentence for the user if it cannot be. */
  async get() {
    try {
      await this.ready;
      return this.module;
    } catch (err) {
      throw new Error(`The SSH client could not be loaded: ${messageOf(err)}`);
    }
  }

  receive(message) {
    switch (message?.type) {
      case "ready":
        this.loaded = true;
        this.started.loaded();
        return;
      case "load-error":
        this.stop(message.message, { loading: true });
        return;
      case "reply":
        this.requests.settle(message.id, message.error === undefined ? { value: message.value } : { error: errorFromWire(message.error) });
        return;
      case "ask":
        this.answer(message);
        return;
      case "state":
        this.stateChanged(message.session, message.state);
        return;
      case "closed":
        this.ended(message.session, message.reason);
        return;
      case "known-hosts":
        try {
          writeKnownHosts(message.before, message.after);
        } catch (err) {
          // As in client-wasm: a key not remembered costs a question next time, not this session.
          console.warn(`tabtunnel: host key accepted but not remembered: ${messageOf(err)}`);
        }
        return;
      default:
        this.stop(`it sent an unknown message: ${String(message?.type)}`);
    }
  }

  /** Asks the page's callback and posts its answer; one that throws answers no. */
  async answer({ id, session, kind, args }) {
    const callback = this.callbacks.get(session)?.[kind];
    const refused = kind === "hostKey" ? false : null;
    let value = refused;
    try {
      if (callback) value = await callback(...args);
    } catch {
      value = refused;
    }
    if (kind === "hostKey") value = Boolean(value);
    else if (value != null) value = Array.from(value, (v) => (v == null ? "" : String(v)));
    if (!this.stopped) this.worker.postMessage({ op: "answer", id, value });
  }

  /** Sends request `op` and resolves with the worker's answer. */
  request(op, fields = {}) {
    try {
      return this.send(op, fields).promise;
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Posts request `op`: { id, promise }; throws if the worker is gone or too busy. */
  send(op, fields) {
    if (this.stopped) throw stoppedError(this.stopped);
    const entry = this.requests.add();
    this.worker.postMessage({ ...fields, id: entry.id, op });
    return entry;
  }

  async connect(options) {
    const { onHostKey, onPrompt, onClose, onStateChange } = options ?? {};
    const fields = {
      options: connectFields(options),
      asksHostKey: Boolean(onHostKey),
      asksPrompt: Boolean(onPrompt),
      asksState: Boolean(onStateChange),
    };
    fields.options.relay ||= location.origin; // the worker has no window to take it from
    if (options?.knownHosts) fields.knownHosts = { text: readKnownHosts() };
    // The request's id names the session: the worker's questions and its end may come
    // before the reply (never before this runs to its first await).
    const { id, promise } = this.send("connect", fields);
    const record = { onClose, onStateChange, closedReason: null, proxy: null };
    this.sessions.set(id, record);
    this.callbacks.set(id, { hostKey: onHostKey, prompt: onPrompt });
    // A session that reconnects may ask onPrompt again when it logs in anew; the
    // others' questions end with the connect.
    const keepAsking = fields.asksState || Boolean(options?.reconnect);
    try {
      const value = await promise;
      record.proxy = new SessionProxy(this, id, value, record);
      if (record.closedReason !== null) this.sessions.delete(id);
      if (!keepAsking || record.closedReason !== null) this.callbacks.delete(id);
      return record.proxy;
    } catch (err) {
      this.sessions.delete(id);
      this.callbacks.delete(id);
      throw err;
    }
  }

  stateChanged(id, state) {
    const record = this.sessions.get(id);
    if (!record || record.closedReason !== null) return;
    try {
      record.onStateChange?.(state);
    } catch (err) {
      globalThis.reportError?.(err);
    }
  }

  ended(id, reason) {
    const record = this.sessions.get(id);
    if (!record || record.closedReason !== null) return;
    record.closedReason = String(reason ?? "");
    if (record.proxy) {
      this.sessions.delete(id);
      this.callbacks.delete(id);
    }
    try {
      record.onClose?.(record.closedReason);
    } catch (err) {
      // As when the wasm calls it: the page's bug, shown in the console, stops nothing here.
      globalThis.reportError?.(err);
    }
  }

  /** The worker is gone: every request fails, every session ends, and the user is told. */
  stop(reason, { loading = false } = {}) {
    if (this.stopped) return;
    reason = String(reason ?? "").trim().replace(/\.$/, "") || "unknown error";
    const starting = loading || !this.loaded;
    this.stopped = starting
      ? `The SSH client could not be loaded: ${reason}`
      : `The SSH client stopped: ${reason}. Reload the page to start it again.`;
    this.worker?.terminate();
    this.started.failed(new Error(reason));
    this.requests.failAll(stoppedError(this.stopped));
    this.onLoadError(this.stopped);
    for (const id of [...this.sessions.keys()]) this.ended(id, `the SSH client stopped (${reason})`);
    this.sessions.clear();
  }
}

/** A session in the worker, as the page uses it. */
class SessionProxy {
  constructor(client, id, { hostKeyFingerprint, hostKeyAlgorithm }, record) {
    Object.assign(this, { client, id, record, hostKeyFingerprint, hostKeyAlgorithm });
  }

  /** Why the session ended, or undefined while it is live. */
  get closedReason() {
    return this.record.closedReason ?? undefined;
  }

  async forward(spec, options) {
    const value = await this.client.request("forward", { session: this.id, spec: String(spec), options: forwardOptions(options) });
    return new ForwardProxy(this, value);
  }

  /** Ends the session; a session whose worker is gone is over already. */
  async close() {
    if (this.client.stopped) return;
    await this.client.request("closeSession", { session: this.id });
  }
}

/**
 * A forward in the worker. `stats()` answers at once with the latest numbers it has and
 * asks for new ones, one question at a time: the page polls it on a timer.
 */
class ForwardProxy {
  constructor(session, { forward, listen, spec, kind, webUrl }) {
    // webUrl: where a browser opens the forward as a web app, or null. kind: "local", "dynamic" or "remote".
    Object.assign(this, { session, id: forward, listen, spec, kind, webUrl: webUrl ?? null });
    this.latest = NO_STATS;
    this.polling = false;
  }

  stats() {
    const { client } = this.session;
    if (!this.polling && !client.stopped) {
      this.polling = true;
      client
        .request("stats", { forward: this.id })
        .then((stats) => {
          if (stats) ({ webUrl: this.webUrl, ...this.latest } = stats); // the URL may change on a reconnect
        }, () => {})
        .finally(() => {
          this.polling = false;
        });
    }
    return this.latest;
  }

  async close() {
    const { client } = this.session;
    if (client.stopped) return;
    await client.request("closeForward", { session: this.session.id, forward: this.id });
  }
}

function stoppedError(text) {
  return Object.assign(new Error(text), { code: "client-stopped" });
}

/** The page's known hosts as the worker needs them for one request. */
function readKnownHosts() {
  try {
    return localStorage.getItem(KNOWN_HOSTS_KEY);
  } catch {
    return null;
  }
}

/** Applies the worker's write to the page's known hosts; throws as client-wasm's store does. */
function writeKnownHosts(before, after) {
  try {
    localStorage.setItem(KNOWN_HOSTS_KEY, applyKnownHostsWrite(readKnownHosts(), before, after));
  } catch {
    // client-core's KnownHostsError over client-wasm's reason, word for word.
    throw Object.assign(new Error("the known host keys could not be saved: localStorage refused the write (full or disabled)"), { code: "known-hosts" });
  }
}
