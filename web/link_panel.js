// A lab link on the page: fills the form from it, says what it will do, lists what of it
// is not used, and keeps Connect from going ahead until the user has seen that. Never
// connects by itself. The rules are lab_link.js's.

import { planLabLink } from "./lab_link.js";
import { messageOf } from "./text.js";

const $ = (id) => document.getElementById(id);

export class LabLinkPanel {
  /**
   * `link`: readLabLink's answer; `wasm`: the SSH client (its parser checks the specs);
   * `form`: the LoginForm it fills; `pending`: the queue its forwards go to.
   */
  constructor({ link, wasm, form, pending }) {
    Object.assign(this, { link, wasm, form, pending });
    /** The latest plan (planLabLink), or null before the first. */
    this.plan = null;
    /** The user chose to go on without the entries in error. */
    this.accepted = false;
    /** The user chose not to use the link. */
    this.dismissed = false;
    this.panel = $("lab-link");
    this.problemsArea = $("lab-link-problems-area");
    this.acceptButton = $("lab-link-accept");
    this.acceptButton.addEventListener("click", () => {
      this.accepted = true;
      this.render();
      this.focusNext();
    });
    // No Escape here: the panel is not a dialog, and dropping a link cannot be undone.
    $("lab-link-dismiss").addEventListener("click", () => this.dismiss());
  }

  get active() {
    return this.plan !== null && !this.dismissed;
  }

  /**
   * (Re)reads the link against what the relay said (`info`: parseTargetsAnswer's, or
   * null); the first time, fills the form, queues the forwards and moves focus to what
   * the user does next.
   */
  async update(info) {
    if (this.dismissed) return;
    const parsed = new Map();
    const specs = this.link.entries.filter(([name]) => name === "L").map(([, v]) => v.trim());
    for (const spec of new Set(specs)) {
      if (spec === "") continue;
      try {
        const mod = await this.wasm.get();
        parsed.set(spec, await mod.parseForwardSpec(spec));
      } catch (err) {
        parsed.set(spec, { error: messageOf(err) });
      }
    }
    const first = this.plan === null;
    const before = this.plan;
    this.plan = planLabLink(this.link, {
      targetNames: info ? info.names : null,
      block: info ? info.portBlock : null,
      maxForwards: info ? info.maxForwards : null,
      parsed,
    });
    if (before && before.problems.join("\n") !== this.plan.problems.join("\n")) this.accepted = false;
    if (before) this.pending.unqueue(before.specs);
    this.pending.queue(this.plan.specs, { unique: true });
    if (first) {
      if (this.plan.target) this.form.target.value = this.plan.target;
      if (this.plan.user) this.form.username.value = this.plan.user;
    }
    this.render();
    if (first) this.focusNext();
  }

  render() {
    this.panel.hidden = !this.active;
    if (!this.active) return;
    $("lab-link-summary").textContent = this.plan.summary;
    const list = $("lab-link-problems");
    list.replaceChildren(...this.plan.problems.map((text) => {
      const li = document.createElement("li");
      li.textContent = text;
      return li;
    }));
    this.problemsArea.hidden = this.plan.problems.length === 0;
    this.acceptButton.hidden = this.accepted || this.plan.problems.length === 0;
    $("lab-link-accepted").hidden = !this.accepted;
    this.panel.dataset.state = this.blocked ? "problems" : "ready";
  }

  /** Entries are not used and the user has not said to go on without them. */
  get blocked() {
    return this.active && this.plan.problems.length > 0 && !this.accepted;
  }

  /** Why Connect must wait, as LoginForm.read says it ({ error, focus }), or null. */
  blocker() {
    if (!this.dismissed && this.plan === null) {
      return { error: "This link is still being read: press Connect again in a moment.", focus: $("connect") };
    }
    if (!this.blocked) return null;
    return {
      error: "Some entries of this link are not used (see the list below): press \"Use the rest of the link\", or \"Don't use this link\".",
      focus: this.acceptButton,
    };
  }

  /** Focus on what the user does next: read the problems, or type what the link cannot carry. */
  focusNext() {
    if (this.blocked) {
      $("lab-link-title").focus();
      return;
    }
    const next = !this.form.username.value.trim() ? this.form.username
      : this.form.usesKey ? this.form.privateKey : this.form.password;
    // The field may be below the fold on a phone: what the link does stays in view.
    next.focus({ preventScroll: true });
    this.panel.scrollIntoView({ block: "nearest" });
  }

  /** The link's session is up: it has done its work, and its panel goes. */
  used() {
    this.dismissed = true;
    this.render();
  }

  dismiss() {
    if (this.plan) this.pending.unqueue(this.plan.specs);
    this.dismissed = true;
    this.render();
    this.form.username.focus();
  }
}
