// The two questions the page asks in a modal dialog: whether to trust a host key, and
// the server's keyboard-interactive prompts. One question of each kind at a time; a new
// one refuses the old one.

const $ = (id) => document.getElementById(id);

function openModal(dialog) {
  dialog.hidden = false;
  document.body.classList.add("modal-open");
}

function closeModal(dialog) {
  dialog.hidden = true;
  document.body.classList.remove("modal-open");
}

export class HostKeyDialog {
  /** `fallbackFocus`: where focus goes back to when what had it is gone. */
  constructor(fallbackFocus) {
    this.fallbackFocus = fallbackFocus;
    this.resolve = null;
    this.returnFocus = null;
    this.dialog = $("hostkey-dialog");
    this.accept = $("hostkey-accept");
    this.reject = $("hostkey-reject");
    this.accept.addEventListener("click", () => this.close(true));
    this.reject.addEventListener("click", () => this.close(false));
    this.dialog.addEventListener("keydown", (ev) => this.onKey(ev));
  }

  get open() {
    return this.resolve !== null;
  }

  /**
   * Shows `fingerprint` of `target`'s `algorithm` key; resolves to true when the user
   * accepts. `otherTypes`: key types this browser already knows for the target, which
   * makes the question come with a warning.
   */
  ask(target, fingerprint, algorithm, otherTypes = []) {
    if (this.open) this.close(false);
    const other = $("hostkey-other");
    other.hidden = otherTypes.length === 0;
    other.textContent = otherTypes.length === 0 ? "" :
      `Warning: this browser already knows a ${otherTypes.join(", ")} key for ${target}, and the server now shows ` +
      `a ${algorithm} key. The server may have been reconfigured, or someone may be intercepting the connection. ` +
      "Accept only if the server's operator confirms this fingerprint.";
    $("hostkey-target").textContent = target;
    $("hostkey-algorithm").textContent = algorithm || "Host";
    $("hostkey-fingerprint").textContent = fingerprint;
    this.returnFocus = document.activeElement;
    openModal(this.dialog);
    $("hostkey-title").focus();
    return new Promise((resolve) => {
      this.resolve = resolve;
    });
  }

  close(answer) {
    const resolve = this.resolve;
    this.resolve = null;
    closeModal(this.dialog);
    const back = this.returnFocus && this.returnFocus !== document.body && document.contains(this.returnFocus)
      ? this.returnFocus
      : this.fallbackFocus;
    if (typeof back.focus === "function") back.focus();
    this.returnFocus = null;
    if (resolve) resolve(answer);
  }

  onKey(ev) {
    if (ev.key === "Escape") {
      ev.preventDefault();
      this.close(false);
    } else if (ev.key === "Tab") {
      // Keep focus inside the dialog.
      const items = [this.accept, this.reject];
      const i = items.indexOf(document.activeElement);
      ev.preventDefault();
      const next = ev.shiftKey ? (i <= 0 ? items.length - 1 : i - 1) : (i + 1) % items.length;
      items[next].focus();
    }
  }
}

/** Keyboard-interactive questions (and a password the server wants but was not given). */
export class PromptDialog {
  constructor() {
    this.resolve = null;
    this.dialog = $("prompt-dialog");
    this.fields = $("prompt-fields");
    $("prompt-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const answers = Array.from(this.fields.querySelectorAll(".prompt-input")).map((i) => i.value);
      this.close(answers);
    });
    $("prompt-cancel").addEventListener("click", () => this.close(null));
    this.dialog.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape") {
        ev.preventDefault();
        this.close(null);
      }
    });
  }

  get open() {
    return this.resolve !== null;
  }

  /** Resolves to one answer per prompt, or null when the user cancels. */
  ask(target, request) {
    if (this.open) this.close(null);
    $("prompt-title").textContent = request.name ? `${target}: ${request.name}` : `${target} asks`;
    $("prompt-instructions").textContent = request.instructions || "";
    this.fields.replaceChildren();
    request.prompts.forEach((p, i) => {
      const label = document.createElement("label");
      label.className = "prompt-label";
      label.textContent = p.prompt;
      const input = document.createElement("input");
      input.className = "prompt-input";
      input.type = p.echo ? "text" : "password";
      input.autocomplete = "off";
      input.id = `prompt-input-${i}`;
      label.htmlFor = input.id;
      this.fields.append(label, input);
    });
    openModal(this.dialog);
    const first = this.fields.querySelector("input");
    (first || $("prompt-submit")).focus();
    return new Promise((resolve) => {
      this.resolve = resolve;
    });
  }

  close(answers) {
    const resolve = this.resolve;
    this.resolve = null;
    this.dialog.hidden = true;
    this.fields.replaceChildren(); // answers do not linger in the page
    document.body.classList.remove("modal-open");
    if (resolve) resolve(answers);
  }
}
