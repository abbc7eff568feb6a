// "Paste an ssh command": fills the user name and target, and queues the -L and -D forwards.

import { parseAnySpec } from "./forwards.js";
import { planPaste } from "./paste_plan.js";
import { outsideBlock } from "./port_block.js";
import { messageOf } from "./text.js";

const $ = (id) => document.getElementById(id);

export class PasteForm {
  /**
   * `wasm`: the SSH client (it parses the line); `form`: the LoginForm to fill in;
   * `state()`: the connection's state; `pending`: the PendingForwards queue; `portBlock()`:
   * the token holder's block of forward ports, or null.
   */
  constructor({ wasm, form, state, pending, portBlock = () => null }) {
    Object.assign(this, { wasm, form, state, pending, portBlock });
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
    // A port outside the holder's block is said now, not after connecting, and not queued.
    const specs = Array.isArray(parsed.forwards) ? parsed.forwards.map(String) : [];
    const dynamic = Array.isArray(parsed.dynamic) ? parsed.dynamic.map(String) : [];
    const outside = await this.outsideBlock([...specs, ...dynamic.map((spec) => `-D ${spec}`)]);
    parsed = {
      ...parsed,
      forwards: specs.filter((spec) => !outside.has(spec)),
      dynamic: dynamic.filter((spec) => !outside.has(`-D ${spec}`)),
    };
    const plan = planPaste(parsed, {
      state: this.state(),
      username: form.username.value.trim(),
      target: form.target.value,
      targetNames: Array.from(form.target.options).map((o) => o.value),
    });
    if (plan.user !== null) form.username.value = plan.user;
    if (plan.target !== null) form.target.value = plan.target;
    for (const [text, kind] of plan.lines) this.line(text, kind);
    for (const [spec, why] of outside) this.line(`${spec} not queued: ${why}`, "warn");
    if (plan.addNow) {
      this.pending.queue(plan.specs);
      await this.pending.addAll();
    } else if (plan.specs.length > 0) {
      this.pending.queue(plan.specs, { unique: true });
    }
  }

  /** Specs of `specs` whose port is outside the holder's block: Map spec -> why. */
  async outsideBlock(specs) {
    const outside = new Map();
    const block = this.portBlock();
    if (!block) return outside;
    const mod = await this.wasm.get();
    for (const spec of specs) {
      try {
        const why = outsideBlock(Number((await parseAnySpec(mod, spec)).port), block);
        if (why) outside.set(spec, why);
      } catch {
        // Said when it is added, as before.
      }
    }
    return outside;
  }
}
