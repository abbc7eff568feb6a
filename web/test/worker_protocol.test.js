import assert from "node:assert/strict";
import { test } from "node:test";

import {
  InFlight, KNOWN_HOSTS_KEY, applyKnownHostsWrite, connectFields, errorFromWire, errorToWire, forwardOptions,
  snapshotStore,
} from "../worker_protocol.js";

test("errors cross with their message, code and host-key fields", () => {
  const thrown = Object.assign(new Error("host key changed"), {
    code: "host-key-changed", algorithm: "ssh-ed25519", remembered: "SHA256:old", offered: "SHA256:new", other: 1,
  });
  const wire = structuredClone(errorToWire(thrown));
  assert.deepEqual(wire, {
    message: "host key changed", code: "host-key-changed", algorithm: "ssh-ed25519", remembered: "SHA256:old", offered: "SHA256:new",
  });
  const back = errorFromWire(wire);
  assert.ok(back instanceof Error);
  assert.equal(back.message, "host key changed");
  assert.equal(back.code, "host-key-changed");
  assert.equal(back.offered, "SHA256:new");
  assert.equal(back.other, undefined);
  assert.deepEqual(errorToWire("plain words"), { message: "plain words" });
  assert.equal(errorFromWire(errorToWire(new Error("bad spec"))).code, undefined);
});

test("requests in flight are bounded and each is answered once", async () => {
  const inFlight = new InFlight(2);
  const a = inFlight.add();
  const b = inFlight.add();
  assert.notEqual(a.id, b.id);
  assert.throws(() => inFlight.add(), /2 requests open already/);
  assert.equal(inFlight.settle(a.id, { value: 7 }), true);
  assert.equal(inFlight.settle(a.id, { value: 8 }), false, "answered once");
  assert.equal(await a.promise, 7);
  const c = inFlight.add();
  inFlight.failAll(new Error("stopped"));
  await assert.rejects(b.promise, /stopped/);
  await assert.rejects(c.promise, /stopped/);
  assert.equal(inFlight.size, 0);
});

test("the worker's store reads the page's copy and reports each write", () => {
  const writes = [];
  const store = snapshotStore('{"a":1}', (before, after) => writes.push([before, after]));
  assert.equal(store.getItem(KNOWN_HOSTS_KEY), '{"a":1}');
  assert.equal(store.getItem("other"), null);
  store.setItem(KNOWN_HOSTS_KEY, '{"a":1,"b":2}');
  store.setItem("other", "x");
  assert.equal(store.getItem(KNOWN_HOSTS_KEY), '{"a":1,"b":2}');
  assert.deepEqual(writes, [['{"a":1}', '{"a":1,"b":2}']]);
  assert.equal(snapshotStore(null, () => {}).getItem(KNOWN_HOSTS_KEY), null);
});

test("a write lands on the page's current known hosts, keeping other tabs' changes", () => {
  const entry = (fingerprint) => ({ fingerprint, algorithm: "ssh-ed25519", added: "2026-01-01" });
  const before = JSON.stringify({ "r|a|k": entry("A"), "r|gone|k": entry("G") });
  const after = JSON.stringify({ "r|a|k": entry("A"), "r|new|k": entry("N") });
  // Meanwhile another tab remembered "r|other|k" and changed nothing the worker touched.
  const current = JSON.stringify({ "r|a|k": entry("A"), "r|gone|k": entry("G"), "r|other|k": entry("O") });
  assert.deepEqual(JSON.parse(applyKnownHostsWrite(current, before, after)), {
    "r|a|k": entry("A"), "r|other|k": entry("O"), "r|new|k": entry("N"),
  });
  // Nothing stored yet, or something unreadable: the write is all there is.
  assert.deepEqual(JSON.parse(applyKnownHostsWrite(null, null, after)), JSON.parse(after));
  assert.deepEqual(JSON.parse(applyKnownHostsWrite("[1]", "not json", after)), JSON.parse(after));
  // A changed fingerprint replaces the page's.
  const changed = JSON.stringify({ "r|a|k": entry("B") });
  assert.deepEqual(JSON.parse(applyKnownHostsWrite(before, before, changed)), { "r|a|k": entry("B") });
});

test("connect's options cross without callbacks or the store", () => {
  const fields = connectFields({
    target: "t", username: "u", password: "p", serverAliveInterval: 0,
    onHostKey: () => true, onPrompt: () => null, onClose: () => {}, knownHosts: true,
  });
  assert.deepEqual(structuredClone(fields), { target: "t", username: "u", password: "p", serverAliveInterval: 0 });
});

test("forward options cross as plain data: check, dynamic as true or a SOCKS login, and remote", () => {
  assert.deepEqual(forwardOptions(undefined), { check: false, dynamic: false, remote: false });
  assert.deepEqual(forwardOptions({ check: 1, dynamic: true }), { check: true, dynamic: true, remote: false });
  assert.deepEqual(forwardOptions({ remote: "yes" }), { check: false, dynamic: false, remote: true });
  const login = forwardOptions({ dynamic: { username: "alice", password: "s3cret", extra: () => {} } });
  assert.deepEqual(structuredClone(login), { check: false, dynamic: { username: "alice", password: "s3cret" }, remote: false });
  assert.deepEqual(forwardOptions({ dynamic: { username: "bob" } }).dynamic, { username: "bob", password: "" });
});
