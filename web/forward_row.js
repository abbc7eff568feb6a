// One forward's row in the Active list: its spec and state, where to connect and who
// else can, its live numbers, Open (when the relay serves it as a web app) and Remove.

import { reachOf, remoteOf } from "./reach.js";
import { liveText, statsView } from "./text.js";

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export class ForwardRow {
  /**
   * A row for the open forward `fwd` of `spec`; `relay` is { publicHost, allowedSources }.
   * `onRemove(row)` runs when the user clicks Remove.
   */
  constructor(spec, fwd, relay, onRemove) {
    this.spec = spec;
    this.fwd = fwd;
    this.closed = false;
    const row = element("li", "forward-row");
    row.dataset.spec = spec;
    row.dataset.state = "open";
    this.row = row;

    const head = element("div", "forward-head");
    this.stateEl = element("span", "state", "open");
    head.append(element("code", "spec", spec), this.stateEl);

    const listen = String(fwd.listen ?? "");
    const remote = remoteOf(spec, listen);
    const lines = remote ? remoteLines(remote) : [];
    if (!remote) {
      lines.push(addressLine("listen-line", "Listening on ", "listen", listen, "Copy listen address"));
      // Where users connect and who else can: a forward bound beyond loopback is open to
      // everyone who can reach the relay host, which the user should know before sharing it.
      const reachable = reachOf(listen, relay, location.hostname);
      if (reachable.connect) {
        lines.unshift(addressLine("listen-line connect-line", "Connect to ", "connect", reachable.connect,
          "Copy address"));
      }
      lines.push(element("p", "reach", reachable.sentence));
    }

    this.statsEl = element("div", "stats");
    const actions = element("div", "row-actions");
    this.removeBtn = element("button", "remove small", "Remove");
    this.removeBtn.type = "button";
    this.removeBtn.setAttribute("aria-label", `Remove forward ${spec}`);
    this.removeBtn.addEventListener("click", () => onRemove(this));
    this.actions = actions;
    this.openLink = null;
    this.renderOpen(fwd.webUrl);
    actions.append(this.removeBtn);
    const foot = element("div", "forward-foot");
    foot.append(this.statsEl, actions);

    row.append(head, ...lines, foot);
    this.renderStats({ connections: 0, active: 0, bytesUp: 0, bytesDown: 0 });
    this.refresh();
  }

  /** Shows the forward's latest numbers; a forward that can no longer report stays as it was. */
  refresh() {
    if (this.closed) return;
    try {
      this.renderStats(this.fwd.stats());
      this.renderOpen(this.fwd.webUrl);
    } catch {
      // Left as it was.
    }
  }

  /**
   * The Open link for `url`, or none. A session that reconnects keeps its forward's URL
   * when the relay resumed it, and gets a new one when the relay had restarted.
   */
  renderOpen(url) {
    if ((this.openLink?.href ?? null) === (url ? new URL(url, location.href).href : null)) return;
    const fresh = url ? openLink(url, this.spec) : null;
    if (this.openLink && fresh) this.openLink.replaceWith(fresh);
    else if (this.openLink) this.openLink.remove();
    else if (fresh) this.actions.prepend(fresh);
    this.openLink = fresh;
  }

  renderStats(st) {
    const view = statsView(st);
    // A SOCKS proxy's clients each name their destination: the row says where they went.
    const live = this.spec.startsWith("-D") && Array.isArray(st.live) ? st.live.map(String) : [];
    const where = live.join(" ");
    if (this.statsEl.dataset.text === view.text && (this.statsEl.dataset.live ?? "") === where) return;
    this.statsEl.dataset.text = view.text;
    this.statsEl.dataset.live = where;
    const parts = [
      stat("connections", String(view.connections)),
      stat("active", String(view.active)),
      stat("bytes up", view.up),
      stat("bytes down", view.down),
    ];
    if (live.length > 0) parts.push(element("div", "live-destinations", liveText(live)));
    if (view.failures > 0) {
      parts.push(stat("failed", String(view.failures)));
      // Why connections fail (e.g. the SSH server forbids the destination) belongs on the row.
      const why = element("div", "last-error", view.lastError);
      why.setAttribute("role", "status");
      parts.push(why);
    }
    this.statsEl.replaceChildren(...parts);
  }

  /** `state` ("open", "closing", "closed") in the row's data and its label. */
  show(state, label = state) {
    this.row.dataset.state = state;
    this.stateEl.textContent = label;
  }

  markClosed(label = "closed") {
    if (!this.closed) this.refresh(); // last numbers
    this.closed = true;
    this.show("closed", label);
    this.row.classList.add("closed");
    // The relay revoked the forward's URL with it: nothing left to open.
    this.openLink?.remove();
    this.removeBtn.disabled = false;
    this.removeBtn.textContent = "Remove";
  }
}

/**
 * "Open": the forward's web URL in a new tab. It carries the forward's key, so it is a
 * link to follow, never text to copy; noopener keeps the app from scripting this page.
 */
function openLink(url, spec) {
  const link = element("a", "open-web button-link small", "Open");
  link.href = url;
  link.target = "_blank";
  link.rel = "noopener noreferrer";
  link.setAttribute("aria-label", `Open forward ${spec} in a new tab`);
  return link;
}

function stat(label, value) {
  const span = element("span", "stat");
  span.append(element("span", "stat-label", `${label} `), element("span", "stat-value", value));
  return span;
}

/** A remote forward's lines: where the SSH server listens, where the relay connects, who. */
function remoteLines({ listen, destination, sentence }) {
  return [
    addressLine("listen-line", "SSH server listens on ", "listen", listen, "Copy SSH server address"),
    addressLine("listen-line destination-line", "Relay connects to ", "destination", destination,
      "Copy destination"),
    element("p", "reach", sentence),
  ];
}

/** A line "LABEL <code>ADDRESS</code> [Copy]" of a forward's row. */
function addressLine(lineClass, label, codeClass, address, copyLabel) {
  const line = element("div", lineClass);
  const code = element("code", codeClass, address);
  const copy = element("button", "copy small", "Copy");
  copy.type = "button";
  copy.setAttribute("aria-label", `${copyLabel} ${address}`);
  // "Copied" (or what to press) is said as well as shown.
  copy.setAttribute("aria-live", "polite");
  copy.addEventListener("click", () => copyText(code, copy));
  line.append(element("span", "label", label), code, copy);
  return line;
}

async function copyText(codeEl, button) {
  const text = codeEl.textContent;
  let copied = false;
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      copied = true;
    }
  } catch {
    copied = false;
  }
  if (!copied) {
    // Fallback: select the text so the user can copy it with the keyboard.
    const range = document.createRange();
    range.selectNodeContents(codeEl);
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    try {
      copied = document.execCommand("copy");
    } catch {
      copied = false;
    }
  }
  button.textContent = copied ? "Copied" : "Selected: press Ctrl+C";
  window.setTimeout(() => {
    button.textContent = "Copy";
  }, 1500);
}
