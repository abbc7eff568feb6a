// One try at opening a session: its target and user, the questions it asks, and how it
// ended. The page makes a new attempt for every Connect; an attempt that was cancelled
// or superseded keeps nothing it gets late. Which host keys to trust is the SSH
// client's to decide (tabtunnel_client::known_hosts); the page only asks the user.

export class ConnectionAttempt {
  /**
   * `hostKeyDialog` and `promptDialog` ask the user; `onClose(attempt, reason)` hears
   * when the session ends, `onState(attempt, state)` when its link drops, is tried
   * again, is restored or is given up on (the session reconnects by itself).
   */
  constructor(target, username, { hostKeyDialog, promptDialog, onClose, onState }) {
    this.target = target;
    this.username = username;
    this.hostKeyDialog = hostKeyDialog;
    this.promptDialog = promptDialog;
    this.onClose = onClose;
    this.onState = onState;
    /** The user cancelled while connecting. */
    this.cancelled = false;
    /** Why the session ended while still connecting (the caller handles it once connected). */
    this.closedReason = null;
    /** The end was handled. */
    this.handled = false;
    /** The user asked to disconnect. */
    this.userClosing = false;
    /** The user answered no to the host key. */
    this.rejected = false;
  }

  /**
   * Connects with the SSH client `wasm` (a WasmClient) and the form's `options`:
   * { session } or { error }, or { cancelled } when the user cancelled first.
   */
  async open(wasm, options) {
    // Remembered per relay, target and key type in this browser's localStorage.
    options.knownHosts = true;
    options.onHostKey = (fingerprint, algorithm, pinned, knownTypes) =>
      this.askHostKey(String(fingerprint), algorithm == null ? "" : String(algorithm), knownTypes ?? []);
    options.onPrompt = (request) => (this.cancelled ? null : this.promptDialog.ask(this.target, request));
    options.onClose = (reason) => this.onClose(this, reason);
    // The session reconnects by itself when its link drops (the client keeps the
    // credentials in its memory for that), and says how it goes.
    options.onStateChange = (state) => this.onState?.(this, state);
    try {
      const mod = await wasm.get();
      if (this.cancelled) return { cancelled: true };
      return { session: await mod.connect(options) };
    } catch (error) {
      return { error };
    } finally {
      // Drop our references to the secrets; the inputs keep them for reconnecting.
      options = null;
    }
  }

  /**
   * The client asks only about keys it does not know: seen for the first time, or of a
   * new type while `knownTypes` are remembered (then with a warning).
   */
  async askHostKey(fingerprint, algorithm, knownTypes) {
    if (this.cancelled) return false;
    const ok = await this.hostKeyDialog.ask(this.target, fingerprint, algorithm, Array.from(knownTypes, String));
    if (this.cancelled) return false;
    if (!ok) this.rejected = true;
    return ok;
  }
}
