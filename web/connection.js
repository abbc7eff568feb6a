// The session's life on the page: Connect, Cancel and Disconnect, the status line, and
// what the page shows when a connection fails or a session ends.

import { ConnectionAttempt } from "./attempt.js";
import { linkStateText, messageOf } from "./text.js";

const $ = (id) => document.getElementById(id);

export class Connection {
  /**
   * `wasm`: the SSH client; `form`: the LoginForm; `dialogs`: { hostKey, prompt };
   * `mismatch`: the MismatchPanel; `forwards`: the ForwardList; `afterConnect()`: adds
   * the pending forwards; `onChange()`: redraws the controls; `mayConnect()`: null, or
   * { error, focus } when something else must be settled first (a lab link's problems).
   */
  constructor({ wasm, form, dialogs, mismatch, forwards, afterConnect, onChange, mayConnect = () => null }) {
    Object.assign(this, { wasm, form, dialogs, mismatch, forwards, afterConnect, onChange, mayConnect });
    /** "disconnected" | "connecting" | "connected" */
    this.state = "disconnected";
    /** The live session handle, or null. */
    this.session = null;
    /** The current ConnectionAttempt, or null. */
    this.attempt = null;
    /** The relay's target list arrived (the form then knows what to offer). */
    this.targetsLoaded = false;
    this.button = $("connect");
    this.status = $("status");
    this.error = $("session-error");
    $("connect-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      if (this.state === "connected") this.disconnect();
      else if (this.state === "connecting") this.cancel();
      else this.connect();
    });
  }

  showError(text) {
    this.error.textContent = text;
  }

  setStatus(text, kind) {
    this.status.textContent = text;
    this.status.dataset.state = kind;
  }

  async connect() {
    this.showError("");
    this.mismatch.hide();
    const read = this.mayConnect() ?? this.form.read(this.targetsLoaded);
    if (read.error) {
      this.showError(read.error);
      read.focus.focus();
      return;
    }
    const { target, username } = read.options;
    const a = new ConnectionAttempt(target, username, {
      hostKeyDialog: this.dialogs.hostKey,
      promptDialog: this.dialogs.prompt,
      onClose: (attempt, reason) => this.onSessionClosed(attempt, reason),
      onState: (attempt, state) => this.onLinkState(attempt, state),
    });
    this.attempt = a;
    this.state = "connecting";
    this.setStatus(`connecting to ${target} as ${username}…`, "connecting");
    this.onChange();

    const opened = a.open(this.wasm, read.options);
    read.options = null;
    const { session: s, error, cancelled } = await opened;
    if (cancelled) return;
    if (this.attempt !== a) {
      // Superseded or cancelled: do not keep a late session.
      if (s) s.close().catch(() => {});
      return;
    }
    if (error) {
      this.failed(a, error);
      return;
    }

    this.session = s;
    this.state = "connected";
    // Rows from an earlier session are closed; start with a clean list.
    this.forwards.removeClosed();
    this.setStatus(`connected as ${username}@${target}, host key ${String(s.hostKeyFingerprint)}`, "connected");
    this.onChange();

    if (a.closedReason !== null) {
      // The session ended before we got here.
      this.onSessionClosed(a, a.closedReason);
      return;
    }
    await this.afterConnect();
  }

  /** Shows why attempt `a` failed: a changed host key, one the user refused, or `error`. */
  failed(a, error) {
    this.attempt = null;
    this.state = "disconnected";
    // A question the server no longer waits for must not stay on screen.
    if (this.dialogs.prompt.open) this.dialogs.prompt.close(null);
    if (this.dialogs.hostKey.open) this.dialogs.hostKey.close(false);
    if (error?.code === "host-key-changed") {
      const algorithm = String(error.algorithm ?? "");
      this.mismatch.show(a.target, { fingerprint: String(error.remembered), algorithm },
        { fingerprint: String(error.offered), algorithm });
      this.showError(`Not connected: the host key of ${a.target} has changed (see the warning below).`);
      this.setStatus("disconnected (host key mismatch)", "error");
    } else if (a.rejected) {
      this.showError("host key refused");
      this.setStatus("disconnected (host key refused)", "error");
    } else {
      this.showError(messageOf(error));
      this.setStatus("disconnected", "error");
    }
    this.onChange();
  }

  /**
   * The session's link dropped and is tried again, or came back: the status line says
   * so. Forwards keep their rows and addresses meanwhile; giving up ends the session
   * (onSessionClosed then says why).
   */
  onLinkState(a, state) {
    if (this.attempt !== a || this.state !== "connected") return;
    if (state?.state === "reconnecting" && state.attempt === 1) a.dropReason = String(state.reason ?? "");
    const line = linkStateText(state, a.username, a.target, a.dropReason);
    if (line) this.setStatus(line.text, line.kind);
  }

  onSessionClosed(a, reason) {
    const text = reason == null || reason === "" ? "connection closed" : String(reason);
    if (a.handled) return;
    if (this.state === "connecting" && this.attempt === a) {
      // Still inside connect(): remember; connect() handles the result.
      a.closedReason = text;
      return;
    }
    if (this.attempt !== a) return; // an abandoned attempt
    a.handled = true;
    this.attempt = null;
    this.session = null;
    this.state = "disconnected";
    this.forwards.markAllClosed();
    if (a.userClosing) {
      this.setStatus("disconnected", "disconnected");
    } else {
      this.setStatus(`closed: ${text}`, "closed");
    }
    this.onChange();
  }

  async disconnect() {
    const a = this.attempt;
    const s = this.session;
    if (!a || !s) return;
    a.userClosing = true;
    this.button.disabled = true;
    try {
      await s.close();
    } catch (err) {
      this.showError(messageOf(err));
    } finally {
      this.button.disabled = false;
    }
    // onClose may or may not have been called by now; finish either way.
    this.onSessionClosed(a, "disconnected");
  }

  cancel() {
    const a = this.attempt;
    if (!a) return;
    a.cancelled = true;
    this.attempt = null;
    if (this.dialogs.hostKey.open) this.dialogs.hostKey.close(false);
    if (this.dialogs.prompt.open) this.dialogs.prompt.close(null);
    this.state = "disconnected";
    this.setStatus("disconnected (cancelled)", "disconnected");
    this.onChange();
  }

  /**
   * The user confirmed a changed key is expected: forget the old one. The client is
   * loaded: it reported the change.
   */
  async forgetKey(target, algorithm) {
    try {
      await this.wasm.module.forgetHostKey(target, algorithm);
    } catch (err) {
      this.showError(messageOf(err));
      return;
    }
    this.showError("");
    this.setStatus(`disconnected (old host key for ${target} forgotten; connect again to check the new key)`, "disconnected");
    this.button.focus();
  }
}

