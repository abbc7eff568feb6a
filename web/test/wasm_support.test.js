import assert from "node:assert/strict";
import { test } from "node:test";

import { SIMD_PROBE, SUPPORTED_BROWSERS, unsupportedReason } from "../wasm_support.js";

test("a browser with WebAssembly SIMD runs the client (node's V8 has it)", () => {
  assert.equal(WebAssembly.validate(SIMD_PROBE), true);
  assert.equal(unsupportedReason(), null);
});

test("the probe's validity rests on its SIMD instructions", () => {
  // 0xfd is the SIMD prefix; the same body with another byte there is no module.
  const prefixes = SIMD_PROBE.reduce((n, b) => n + (b === 0xfd ? 1 : 0), 0);
  assert.equal(prefixes, 2);
  const unknownPrefix = SIMD_PROBE.map((b) => (b === 0xfd ? 0xff : b));
  assert.equal(WebAssembly.validate(unknownPrefix), false);
});

test("a browser without SIMD is told it is too old, and which versions work", () => {
  const oldBrowser = { validate: (bytes) => !Array.from(bytes).includes(0xfd) };
  const reason = unsupportedReason(oldBrowser);
  assert.match(reason, /too old for the SSH client/);
  assert.match(reason, /WebAssembly SIMD/);
  assert.ok(reason.includes(SUPPORTED_BROWSERS));
  assert.match(SUPPORTED_BROWSERS, /Chrome or Edge 91, Firefox 89, Safari 16\.4/);
});

test("a browser without WebAssembly is told so", () => {
  assert.match(unsupportedReason(null), /cannot run WebAssembly/);
  assert.match(unsupportedReason({}), /cannot run WebAssembly/);
});
