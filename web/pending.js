// Forwards queued from a pasted command, added right after connecting (or at once when
// connected). A failed one stays in the list with its reason until dropped or retried.

const $ = (id) => document.getElementById(id);

export class PendingForwards {
  /**
   * `add(spec)`: opens a forward, true on success (its error is then in `lastError()`);
   * `connected()`: whether adding can go on; `onChange()`: redraws the controls.
   */
  constructor({ add, lastError, connected, onChange }) {
    Object.assign(this, { add, lastError, connected, onChange });
    /** { spec, error? } in order. */
    this.items = [];
    this.list = $("pending-forwards");
  }

  get specs() {
    return this.items.map((p) => p.spec);
  }

  /** Queues `specs`; with `unique`, leaves out those already queued. */
  queue(specs, { unique = false } = {}) {
    for (const spec of specs) {
      if (!unique || !this.items.some((p) => p.spec === spec)) this.items.push({ spec });
    }
    this.render();
  }

  /** Takes `specs` out of the queue (those a lab link queued, when it is dropped or re-read). */
  unqueue(specs) {
    this.items = this.items.filter((p) => !specs.includes(p.spec));
    this.render();
  }

  render() {
    this.list.replaceChildren();
    for (const p of this.items) {
      const li = document.createElement("li");
      li.className = "pending-row";
      li.dataset.spec = p.spec;
      const code = document.createElement("code");
      code.textContent = p.spec;
      const note = document.createElement("span");
      note.className = p.error ? "pending-note error-text" : "pending-note";
      note.textContent = p.error ? `failed: ${p.error}` : "pending";
      const drop = document.createElement("button");
      drop.type = "button";
      drop.className = "small drop";
      drop.textContent = "Drop";
      drop.setAttribute("aria-label", `Drop pending forward ${p.spec}`);
      drop.addEventListener("click", () => {
        const i = this.items.indexOf(p);
        if (i >= 0) this.items.splice(i, 1);
        this.render();
      });
      li.append(code, note, drop);
      this.list.append(li);
    }
    this.onChange();
  }

  /** Adds the queued forwards one by one while connected; `retryFailed` tries failed ones again. */
  async addAll({ retryFailed = false } = {}) {
    if (retryFailed) {
      for (const p of this.items) delete p.error;
      this.render();
    }
    while (this.items.length > 0 && this.connected()) {
      const p = this.items.find((x) => !x.error);
      if (!p) break;
      const ok = await this.add(p.spec);
      if (ok) {
        const i = this.items.indexOf(p);
        if (i >= 0) this.items.splice(i, 1);
      } else {
        p.error = this.lastError() || "failed";
      }
      this.render();
    }
  }
}
