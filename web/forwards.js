// The Forwards card: the form that adds one, the Active list, and the timer that keeps
// the rows' numbers current while any forward is open.

import { ForwardRow } from "./forward_row.js";
import { outsideBlock } from "./port_block.js";
import { specFromFields } from "./reach.js";
import { messageOf } from "./text.js";

const $ = (id) => document.getElementById(id);

const STATS_INTERVAL_MS = 500;

/**
 * Checks a forward as typed: `-D [bind:]port` (a SOCKS proxy, as ssh -D) or an `ssh -L`
 * spec, with or without `-L`. Answers { bind, port, ... } or throws the parser's error.
 */
export async function parseAnySpec(mod, spec) {
  const text = String(spec).trim();
  if (text.startsWith("-D")) return mod.parseDynamicSpec(text.slice(2));
  return mod.parseForwardSpec(text.startsWith("-L") ? text.slice(2) : text);
}

export class ForwardList {
  /**
   * `wasm`: the SSH client (to check specs); `session()`: the connected session or null;
   * `relay`: { publicHost, allowedSources, portBlock } (filled in when the targets arrive);
   * `onChange()`: redraws the controls.
   */
  constructor({ wasm, session, relay, onChange }) {
    Object.assign(this, { wasm, session, relay, onChange });
    /** ForwardRows in list order, closed ones included until removed. */
    this.rows = [];
    /** An Add is under way (its button stays disabled). */
    this.adding = false;
    this.statsTimer = null;
    this.list = $("forwards");
    this.error = $("forward-error");
    this.spec = $("forward-spec");
    this.fieldset = $("forward-fields");
    this.check = $("forward-check");
    this.socksLogin = { username: $("socks-username"), password: $("socks-password") };
    this.fields = { bind: $("forward-bind"), port: $("forward-port"), host: $("forward-host"), hostport: $("forward-hostport") };
    for (const input of Object.values(this.fields)) {
      input.addEventListener("input", () => {
        this.spec.value = this.specFromFields();
        this.showError("");
      });
    }
    this.spec.addEventListener("input", () => this.showError(""));
    $("forward-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.submit();
    });
  }

  /** The forwards still open, as the SSH client's handles. */
  get open() {
    return this.rows.filter((r) => !r.closed).map((r) => r.fwd);
  }

  showError(text) {
    this.error.textContent = text;
  }

  specFromFields() {
    const values = {};
    for (const [name, input] of Object.entries(this.fields)) values[name] = input.value.trim();
    return specFromFields(values);
  }

  async submit() {
    this.showError("");
    const spec = this.spec.value.trim() || this.specFromFields();
    if (!spec) {
      this.showError("Enter a forward such as 10080:mail.example.com:110, or fill in the fields.");
      this.spec.focus();
      return;
    }
    this.adding = true;
    this.onChange();
    try {
      const ok = await this.add(spec);
      if (ok) {
        this.spec.value = "";
        for (const input of Object.values(this.fields)) input.value = "";
      } else {
        this.spec.value = spec;
      }
      this.spec.focus();
    } finally {
      this.adding = false;
      this.onChange();
    }
  }

  /** Validates and opens one forward. Returns true on success; errors go to #forward-error. */
  async add(spec) {
    // A remote forward (-R) listens on the SSH server, not in the relay's port block;
    // the session checks its spec.
    const remote = spec.startsWith("-R");
    let parsed;
    try {
      const mod = await this.wasm.get();
      parsed = remote ? null : await parseAnySpec(mod, spec);
    } catch (err) {
      this.showError(messageOf(err));
      return false;
    }
    // Said here rather than by the relay: the user sees their block and a clear reason.
    const outside = parsed && outsideBlock(Number(parsed.port), this.relay.portBlock);
    if (outside) {
      this.showError(`${spec}: ${outside}`);
      return false;
    }
    const s = this.session();
    if (!s) {
      this.showError("Not connected.");
      return false;
    }
    const options = { check: this.check.checked };
    const username = this.socksLogin.username.value;
    if (spec.trim().startsWith("-D") && username) {
      options.dynamic = { username, password: this.socksLogin.password.value };
    }
    let fwd;
    try {
      fwd = await s.forward(spec, options);
    } catch (err) {
      this.showError(messageOf(err));
      return false;
    }
    if (this.session() !== s) {
      // The session ended while the forward was being opened.
      fwd.close().catch(() => {});
      this.showError(`${spec}: the session closed before the forward was ready.`);
      return false;
    }
    const row = new ForwardRow(spec, fwd, this.relay, (r) => this.remove(r));
    this.list.append(row.row);
    this.rows.push(row);
    this.startStatsTimer();
    this.onChange();
    return true;
  }

  startStatsTimer() {
    if (this.statsTimer !== null) return;
    this.statsTimer = window.setInterval(() => {
      const open = this.rows.filter((r) => !r.closed);
      if (open.length === 0) {
        window.clearInterval(this.statsTimer);
        this.statsTimer = null;
        return;
      }
      for (const r of open) r.refresh();
    }, STATS_INTERVAL_MS);
  }

  /** The session ended: every row stays, marked closed, with its last numbers. */
  markAllClosed() {
    for (const r of this.rows) r.markClosed();
  }

  removeClosed() {
    for (const r of this.rows.filter((x) => x.closed)) this.drop(r);
  }

  drop(row) {
    const i = this.rows.indexOf(row);
    if (i >= 0) this.rows.splice(i, 1);
    row.row.remove();
    this.onChange();
  }

  async remove(row) {
    this.showError("");
    if (row.closed) {
      this.drop(row);
      this.spec.focus();
      return;
    }
    row.removeBtn.disabled = true;
    row.show("closing");
    try {
      await row.fwd.close();
    } catch (err) {
      if (!row.closed) {
        row.removeBtn.disabled = false;
        row.show("open");
        this.showError(messageOf(err));
        return;
      }
    }
    row.closed = true;
    this.drop(row);
    if (!this.fieldset.disabled) this.spec.focus();
  }
}
