import assert from "node:assert/strict";
import { test } from "node:test";

import { formatBytes, forwardsWord, linkStateText, liveText, messageOf, statsView } from "../text.js";

test("messageOf reads Errors, wasm error objects and strings", () => {
  assert.equal(messageOf(new Error("boom")), "boom");
  assert.equal(messageOf({ message: "from wasm", code: "x" }), "from wasm");
  assert.equal(messageOf("plain"), "plain");
  assert.equal(messageOf(undefined), "unknown error");
  assert.equal(messageOf(null), "unknown error");
  assert.equal(messageOf(42), "42");
  assert.equal(messageOf({ message: "" }), "[object Object]");
});

test("formatBytes uses binary units with one decimal below 100", () => {
  assert.equal(formatBytes(0), "0 B");
  assert.equal(formatBytes(1023), "1023 B");
  assert.equal(formatBytes(1024), "1.0 KiB");
  assert.equal(formatBytes(1536), "1.5 KiB");
  assert.equal(formatBytes(150 * 1024 * 1024), "150 MiB");
  assert.equal(formatBytes(2 ** 60), "1024 PiB");
  assert.equal(formatBytes("not a number"), "0 B");
  assert.equal(formatBytes(undefined), "0 B");
});

test("statsView fills missing numbers and adds failures only when there are some", () => {
  const quiet = statsView({ connections: 2, active: 1, bytesUp: 10, bytesDown: 2048 });
  assert.equal(quiet.text, "connections 2 · active 1 · up 10 B · down 2.0 KiB");
  assert.equal(quiet.failures, 0);
  const failing = statsView({ failures: 3, lastError: "refused" });
  assert.equal(failing.text, "connections 0 · active 0 · up 0 B · down 0 B · failed 3: refused");
  assert.equal(failing.lastError, "refused");
  assert.equal(statsView(undefined).text, "connections 0 · active 0 · up 0 B · down 0 B");
});

test("forwardsWord counts in English", () => {
  assert.equal(forwardsWord(1), "1 forward");
  assert.equal(forwardsWord(2), "2 forwards");
});

test("linkStateText says the attempt, the wait and why, and keeps why once restored", () => {
  assert.deepEqual(
    linkStateText({ state: "reconnecting", attempt: 2, nextTryMs: 1234, reason: "the relay closed the connection" }, "ann", "lab"),
    { text: "reconnecting (attempt 2, next try in 1.2 s): the relay closed the connection", kind: "reconnecting" },
  );
  assert.deepEqual(linkStateText({ state: "reconnecting" }, "ann", "lab"), {
    text: "reconnecting (attempt 1, next try in 0.0 s)",
    kind: "reconnecting",
  });
  assert.deepEqual(linkStateText({ state: "restored", resumed: true }, "ann", "lab", "sshd restarted"), {
    text: "connected again as ann@lab after: sshd restarted; forwards restored on the same ports",
    kind: "connected",
  });
  assert.equal(linkStateText({ state: "live" }, "ann", "lab"), null);
  assert.equal(linkStateText({ state: "gave-up", reason: "x" }, "ann", "lab"), null);
  assert.equal(linkStateText(undefined, "ann", "lab"), null);
});

test("liveText names the first destinations and counts the rest", () => {
  assert.equal(liveText(["localhost:80"]), "to localhost:80");
  assert.equal(liveText(["a:1", "b:2", "[::1]:3"]), "to a:1, b:2, [::1]:3");
  assert.equal(liveText(["a:1", "b:2", "c:3", "d:4", "e:5", "f:6"]), "to a:1, b:2, c:3, d:4 and 2 more");
});
