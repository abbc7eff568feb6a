// "Paste an ssh command": fills the user name and target, and queues the -L forwards.

import { planPaste } from "./paste_plan.js";
import { messageOf } from "./text.js";

const $ = (id) => document.getElementById(id);

export class PasteForm {
  /**
   * `wasm`: the SSH client (it parses the line); `form`: the LoginForm to fill in;
   * `state()`: the connection's state; `pending`: the PendingForwards queue.
   */
  constructor({ wasm, form, state, pending }) {
    Object.assign(this, { wasm, form, state, pending });
    this.command = $("paste-command");
    this.result = $("paste-result");
    $("paste-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.submit();
    });
  }

  line(text, kind = "info") {
    const p = document.createElement("p");
    p.className = `paste-line ${kind}`;
    if (kind === "error") p.setAttribute("role", "alert");
    p.textContent = text;
    this.result.append(p);
  }

  async submit() {
    this.result.replaceChildren();
    const command = this.command.value.trim();
    if (!command) {
      this.line("Paste a command such as: ssh -N -L 1100:mail.example.com:110 alice@demo", "error");
      this.command.focus();
      return;
    }
    let parsed;
    try {
      const mod = await this.wasm.get();
      parsed = await mod.parseSshCommand(command);
    } catch (err) {
      this.line(messageOf(err), "error");
      this.command.focus();
      return;
    }
    const { form } = this;
    const plan = planPaste(parsed, {
      state: this.state(),
      username: form.username.value.trim(),
      target: form.target.value,
      targetNames: Array.from(form.target.options).map((o) => o.value),
    });
    if (plan.user !== null) form.username.value = plan.user;
    if (plan.target !== null) form.target.value = plan.target;
    for (const [text, kind] of plan.lines) this.line(text, kind);
    if (plan.addNow) {
      this.pending.queue(plan.specs);
      await this.pending.addAll();
    } else if (plan.specs.length > 0) {
      this.pending.queue(plan.specs, { unique: true });
    }
  }
}
