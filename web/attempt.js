// One try at opening a session: its target and user, the host-key check, and how it
// ended. The page makes a new attempt for every Connect; an attempt that was cancelled
// or superseded keeps nothing it gets late.

export class ConnectionAttempt {
  /**
   * `knownHosts`: the browser's remembered keys; `hostKeyDialog` and `promptDialog` ask the
   * user; `onClose(attempt, reason)` hears when the session ends.
   */
  constructor(target, username, { knownHosts, hostKeyDialog, promptDialog, onClose }) {
    this.target = target;
    this.username = username;
    this.knownHosts = knownHosts;
    this.hostKeyDialog = hostKeyDialog;
    this.promptDialog = promptDialog;
    this.onClose = onClose;
    /** The user cancelled while connecting. */
    this.cancelled = false;
    /** Why the session ended while still connecting (the caller handles it once connected). */
    this.closedReason = null;
    /** The end was handled. */
    this.handled = false;
    /** The user asked to disconnect. */
    this.userClosing = false;
    /** The host key as offered, and whether the client asked the page about it. */
    this.hostKey = null;
    this.asked = false;
    /** { known, offered }: the key differs from the remembered one. */
    this.mismatch = null;
    /** The user refused the key. */
    this.rejected = false;
  }

  /**
   * Connects with the SSH client `wasm` (a WasmClient) and the form's `options`:
   * { session } or { error }, or { cancelled } when the user cancelled first.
   */
  async open(wasm, options) {
    options.onHostKey = (fingerprint, algorithm, pinned) => this.checkHostKey(fingerprint, algorithm, pinned);
    options.onPrompt = (request) => (this.cancelled ? null : this.promptDialog.ask(this.target, request));
    options.onClose = (reason) => this.onClose(this, reason);
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
   * The client's onHostKey: trust a remembered key, refuse a changed one, accept an
   * operator-pinned key silently only when no other key type is known, else ask.
   */
  async checkHostKey(fingerprint, algorithm, pinned) {
    fingerprint = String(fingerprint);
    algorithm = algorithm == null ? "" : String(algorithm);
    this.asked = true;
    this.hostKey = { fingerprint, algorithm };
    if (this.cancelled) return false;
    const { target, knownHosts } = this;
    const known = knownHosts.get(target, algorithm);
    if (known) {
      if (known.fingerprint === fingerprint) return true;
      this.mismatch = { known, offered: { fingerprint, algorithm } };
      return false;
    }
    const others = knownHosts.otherTypes(target, algorithm);
    if (pinned && others.length === 0) {
      // The relay's operator pinned this key and it matched: nothing to ask. A key
      // remembered earlier wins above, and a new key type is asked below, so a relay
      // cannot swap in a key of its own silently.
      knownHosts.remember(target, fingerprint, algorithm);
      return true;
    }
    const ok = await this.hostKeyDialog.ask(target, fingerprint, algorithm, others);
    if (this.cancelled) return false;
    if (!ok) {
      this.rejected = true;
      return false;
    }
    knownHosts.remember(target, fingerprint, algorithm);
    return true;
  }

  /**
   * Belt and braces: if the client never asked about the key, check it now.
   * { known, offered } when `session`'s key differs from the remembered one, else null.
   */
  changedKeyOf(session) {
    const fingerprint = this.fingerprintOf(session);
    if (this.asked || !fingerprint) return null;
    const algorithm = session.hostKeyAlgorithm ? String(session.hostKeyAlgorithm) : "";
    const known = this.knownHosts.get(this.target, algorithm);
    return known && known.fingerprint !== fingerprint ? { known, offered: { fingerprint, algorithm } } : null;
  }

  fingerprintOf(session) {
    return session.hostKeyFingerprint ? String(session.hostKeyFingerprint) : (this.hostKey?.fingerprint ?? "");
  }
}
