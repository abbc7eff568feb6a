// Whether this browser can run the SSH client. The client is built with WebAssembly SIMD
// (ring's ChaCha20-Poly1305 is 25-60% faster with it), which a browser without SIMD
// refuses to compile, with an error that names an opcode; and it runs in a module worker,
// which older browsers refuse with a syntax error. This says so in words, before the page
// tries to load the client. No DOM here.

/**
 * The smallest module that uses a SIMD instruction, from wasm-feature-detect:
 * (func (result v128) i32.const 0 i8x16.splat i8x16.popcnt).
 */
export const SIMD_PROBE = Uint8Array.of(
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // "\0asm", version 1
  0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7b, // type section: () -> v128
  0x03, 0x02, 0x01, 0x00, // function section: one function of type 0
  0x0a, 0x0a, 0x01, 0x08, 0x00, // code section: one body, no locals
  0x41, 0x00, // i32.const 0
  0xfd, 0x0f, // i8x16.splat
  0xfd, 0x62, // i8x16.popcnt
  0x0b, // end
);

// SIMD: Chrome 91, Firefox 89, Safari 16.4; module workers: Chrome 80, Firefox 114, Safari 15.
export const SUPPORTED_BROWSERS = "Chrome or Edge 91, Firefox 114, Safari 16.4, or newer";

/**
 * Why this browser cannot run the client, as a sentence for the user; null if it can.
 * `webAssembly` is the browser's `WebAssembly` namespace (a parameter so tests can pass
 * an old browser's).
 */
export function unsupportedReason(webAssembly = globalThis.WebAssembly, worker = globalThis.Worker) {
  if (typeof webAssembly?.validate !== "function") {
    return `This browser cannot run WebAssembly, which the SSH client needs. It works in ${SUPPORTED_BROWSERS}.`;
  }
  if (!webAssembly.validate(SIMD_PROBE)) {
    return `This browser is too old for the SSH client (it lacks WebAssembly SIMD). It works in ${SUPPORTED_BROWSERS}.`;
  }
  if (!runsModuleWorkers(worker)) {
    return `This browser is too old for the SSH client (it cannot run module workers). It works in ${SUPPORTED_BROWSERS}.`;
  }
  return null;
}

/**
 * Whether `Worker` (the browser's constructor) starts module workers. A browser reads
 * the options' `type` only if it knows module workers, and reads the options before it
 * parses the address, so an address that is no URL starts nothing, fetches nothing and
 * breaks no content policy.
 */
export function runsModuleWorkers(Worker) {
  if (typeof Worker !== "function") return false;
  let read = false;
  const options = {
    get type() {
      read = true;
      return "module";
    },
  };
  try {
    new Worker("http://[", options).terminate();
  } catch {
    // Not a URL, as intended: what matters is whether `type` was read.
  }
  return read;
}
