// The SSH client, /pkg/client_wasm.js. Loaded dynamically so the rest of the page
// (targets, error messages) still works if it is missing or fails to start.

import { messageOf } from "./text.js";
import { unsupportedReason } from "./wasm_support.js";

export class WasmClient {
  /** Starts loading at once; `onLoadError(text)` says why it failed, once. */
  constructor(onLoadError) {
    this.module = null;
    this.ready = (async () => {
      const unsupported = unsupportedReason();
      if (unsupported) {
        onLoadError(unsupported);
        throw new Error(unsupported);
      }
      try {
        const mod = await import("/pkg/client_wasm.js");
        await mod.default();
        this.module = mod;
        return mod;
      } catch (err) {
        onLoadError(`The SSH client could not be loaded: ${messageOf(err)}`);
        throw err;
      }
    })();
    this.ready.catch(() => {}); // reported above
  }

  /** The module, once loaded; rejects with a sentence for the user if it cannot be. */
  async get() {
    if (this.module) return this.module;
    try {
      return await this.ready;
    } catch (err) {
      throw new Error(`The SSH client could not be loaded: ${messageOf(err)}`);
    }
  }
}
