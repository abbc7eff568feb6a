// What crosses postMessage between the page (wasm.js) and the SSH client's worker
// (client_worker.js), for both sides. No DOM here: tested by web/test/worker_protocol.test.js.
//
// The page sends requests `{ id, op, ...fields }`; the worker answers each once with
// `{ type: "reply", id, value }` or `{ type: "reply", id, error }`. On its own the worker
// posts `ready`, `load-error`, `ask` (a callback the page answers with an `answer`
// request), `state` (a session's link dropped, is tried again, was restored or given up
// on), `closed` (a session ended) and `known-hosts` (a write to the page's store).

/** The page's localStorage key for remembered host keys (client-wasm's known_hosts.rs). */
export const KNOWN_HOSTS_KEY = "tabtunnel.knownHosts";

/**
 * Requests waiting for the worker, and questions waiting for the page, at most this
 * many at once: the page sends a handful (connect, one stats poll per forward, adds),
 * so reaching it means something loops, and it fails rather than queue without end.
 */
export const MAX_IN_FLIGHT = 256;

const ERROR_FIELDS = ["code", "algorithm", "remembered", "offered"];

/** A thrown value as plain data that survives structured cloning, keeping client-wasm's fields. */
export function errorToWire(err) {
  const wire = { message: messageOfThrown(err) };
  if (err && typeof err === "object") {
    for (const field of ERROR_FIELDS) {
      if (typeof err[field] === "string") wire[field] = err[field];
    }
  }
  return wire;
}

/** The Error the page's modules expect back: same message, same `code` and host-key fields. */
export function errorFromWire(wire) {
  const err = new Error(String(wire?.message ?? "unknown error"));
  for (const field of ERROR_FIELDS) {
    if (typeof wire?.[field] === "string") err[field] = wire[field];
  }
  return err;
}

function messageOfThrown(err) {
  if (err && typeof err === "object" && typeof err.message === "string" && err.message) return err.message;
  if (typeof err === "string" && err) return err;
  return String(err ?? "unknown error");
}

/**
 * Requests awaiting an answer, by id; at most `limit`. `add()` returns { id, promise }
 * and throws when full; `settle` answers one; `failAll` answers all with an error.
 */
export class InFlight {
  constructor(limit = MAX_IN_FLIGHT) {
    this.limit = limit;
    this.next = 1;
    this.waiting = new Map();
  }

  get size() {
    return this.waiting.size;
  }

  add() {
    if (this.waiting.size >= this.limit) {
      throw new Error(`The SSH client has ${this.limit} requests open already; wait for them to finish.`);
    }
    const id = this.next++;
    const promise = new Promise((resolve, reject) => this.waiting.set(id, { resolve, reject }));
    return { id, promise };
  }

  /** Answers request `id` with `value`, or rejects it with `error`; false if it is not waiting. */
  settle(id, { value, error } = {}) {
    const entry = this.waiting.get(id);
    if (!entry) return false;
    this.waiting.delete(id);
    if (error !== undefined) entry.reject(error);
    else entry.resolve(value);
    return true;
  }

  failAll(error) {
    const entries = [...this.waiting.values()];
    this.waiting.clear();
    for (const entry of entries) entry.reject(error);
  }
}

/**
 * The worker's stand-in for localStorage (client-wasm takes any object with getItem and
 * setItem): it reads the copy of the known hosts the page sent with the request, and
 * reports each write as `onWrite(before, after)` for the page to apply to its own.
 */
export function snapshotStore(text, onWrite) {
  let current = typeof text === "string" ? text : null;
  return {
    getItem: (name) => (name === KNOWN_HOSTS_KEY ? current : null),
    setItem: (name, value) => {
      if (name !== KNOWN_HOSTS_KEY) return;
      const before = current;
      current = String(value);
      onWrite(before, current);
    },
  };
}

/**
 * The page's known hosts after the worker's write `before` -> `after`, applied to
 * `current` (localStorage now, which another tab may have changed meanwhile): the
 * entries the write added, changed or removed, and nothing else. Unreadable text counts
 * as empty, as client-wasm reads it.
 */
export function applyKnownHostsWrite(current, before, after) {
  const now = entriesOf(current);
  const was = entriesOf(before);
  const will = entriesOf(after);
  for (const [key, entry] of Object.entries(will)) {
    if (JSON.stringify(was[key]) !== JSON.stringify(entry)) now[key] = entry;
  }
  for (const key of Object.keys(was)) {
    if (!Object.hasOwn(will, key)) delete now[key];
  }
  return JSON.stringify(now);
}

function entriesOf(text) {
  if (typeof text !== "string") return {};
  try {
    const value = JSON.parse(text);
    return value && typeof value === "object" && !Array.isArray(value) ? value : {};
  } catch {
    return {};
  }
}

/** `{ connections, active, bytesUp, bytesDown, failures, lastError }` before the first poll. */
export const NO_STATS = Object.freeze({ connections: 0, active: 0, bytesUp: 0, bytesDown: 0, failures: 0, lastError: null });

/** The fields of connect()'s options that cross to the worker: plain data, no callbacks. */
export function connectFields(options) {
  const fields = {};
  for (const [key, value] of Object.entries(options ?? {})) {
    if (typeof value !== "function" && key !== "knownHosts") fields[key] = value;
  }
  return fields;
}

/**
 * The options of forward() that cross to the worker: `check`, `dynamic` (true, or the
 * SOCKS login { username, password } a -D forward asks of its clients) and `remote` (the
 * spec is -R's) as plain data.
 */
export function forwardOptions(options) {
  const login = options?.dynamic;
  const dynamic = login && typeof login === "object"
    ? { username: String(login.username ?? ""), password: String(login.password ?? "") }
    : Boolean(login);
  return { check: Boolean(options?.check), dynamic, remote: Boolean(options?.remote) };
}
