// The tabtunnel client for an embedder's own page: the same worker-based client the
// bundled page uses (wasm.js starts client_worker.js, which runs the wasm), so a bulk
// transfer never competes with the embedder's UI. Types: index.d.ts.

import { WasmClient } from "./wasm.js";

/**
 * Starts the client's worker and resolves with its functions once the wasm has loaded;
 * rejects with a sentence for the user if it cannot load. `onStop(text)` is told, once,
 * why the client could not load or why it stopped later (every session then ends).
 */
export function loadClient({ onStop } = {}) {
  const client = new WasmClient((text) => onStop?.(text));
  return client.get();
}
