import assert from "node:assert/strict";
import { test } from "node:test";

import { SIMD_PROBE, SUPPORTED_BROWSERS, runsModuleWorkers, unsupportedReason } from "../wasm_support.js";

/** A browser's Worker that knows module workers (and refuses an address that is no URL). */
class ModernWorker {
  constructor(_url, options) {
    void options?.type;
    throw new SyntaxError("The URL 'http://[' is invalid.");
  }
}

/** An older browser's Worker: it ignores `type` (and would load the script as classic). */
class ClassicWorker {
  constructor() {}
  terminate() {}
}

test("a browser with WebAssembly SIMD runs the client (node's V8 has it)", () => {
  assert.equal(WebAssembly.validate(SIMD_PROBE), true);
  assert.equal(unsupportedReason(WebAssembly, ModernWorker), null);
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
  const reason = unsupportedReason(oldBrowser, ModernWorker);
  assert.match(reason, /too old for the SSH client/);
  assert.match(reason, /WebAssembly SIMD/);
  assert.ok(reason.includes(SUPPORTED_BROWSERS));
  assert.match(SUPPORTED_BROWSERS, /Chrome or Edge 91, Firefox 114, Safari 16\.4/);
});

test("a browser without WebAssembly is told so", () => {
  assert.match(unsupportedReason(null), /cannot run WebAssembly/);
  assert.match(unsupportedReason({}), /cannot run WebAssembly/);
});

test("a browser without module workers is told it is too old", () => {
  assert.equal(runsModuleWorkers(ModernWorker), true);
  assert.equal(runsModuleWorkers(ClassicWorker), false);
  assert.equal(runsModuleWorkers(undefined), false);
  const reason = unsupportedReason(WebAssembly, ClassicWorker);
  assert.match(reason, /too old for the SSH client \(it cannot run module workers\)/);
  assert.ok(reason.includes(SUPPORTED_BROWSERS));
});
