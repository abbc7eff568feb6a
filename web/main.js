// tabtunnel page: `ssh -L` from a browser tab. The SSH client is the wasm module at
// /pkg/client_wasm.js, run in a worker (wasm.js, client_worker.js); these modules drive the UI. This one builds them and wires them
// together; none of the others imports another's state.

import { Connection } from "./connection.js";
import { renderControls } from "./controls.js";
import { HostKeyDialog, PromptDialog } from "./dialogs.js";
import { ForwardList } from "./forwards.js";
import { isLabLink, readLabLink } from "./lab_link.js";
import { PageLayout } from "./layout.js";
import { LabLinkPanel } from "./link_panel.js";
import { LoginForm } from "./login_form.js";
import { MismatchPanel } from "./mismatch.js";
import { PasteForm } from "./paste.js";
import { PendingForwards } from "./pending.js";
import { blockText } from "./port_block.js";
import { tokenFromFragment } from "./relay_info.js";
import { loadTargets } from "./targets.js";
import { WasmClient } from "./wasm.js";

const $ = (id) => document.getElementById(id);
const showSessionError = (text) => {
  $("session-error").textContent = text;
};

/**
 * What the relay says about reaching its forwards, and the token holder's block of ports;
 * filled in when the targets arrive.
 */
const relay = { publicHost: null, allowedSources: [], portBlock: null };

const wasm = new WasmClient(showSessionError);
const form = new LoginForm(showSessionError);
const layout = new PageLayout();
// The parts reach each other through closures, which run only once all are built (no
// constructor calls them).
const refresh = () => {
  renderControls({
    state: connection.state,
    loginControls: form.controls,
    targetsLoaded: connection.targetsLoaded,
    adding: forwards.adding,
    forwardCount: forwards.rows.length,
    pendingCount: pending.items.length,
  });
  layout.render(connection.state);
};
const forwards = new ForwardList({
  wasm,
  relay,
  session: () => (connection.state === "connected" ? connection.session : null),
  onChange: refresh,
});
const pending = new PendingForwards({
  add: (spec) => forwards.add(spec),
  lastError: () => forwards.error.textContent,
  connected: () => connection.state === "connected",
  onChange: refresh,
});
const connection = new Connection({
  wasm,
  form,
  dialogs: { hostKey: new HostKeyDialog($("connect")), prompt: new PromptDialog() },
  mismatch: new MismatchPanel((target, algorithm) => connection.forgetKey(target, algorithm)),
  forwards,
  afterConnect: () => {
    linkPanel?.used();
    return pending.addAll({ retryFailed: true });
  },
  onChange: refresh,
  mayConnect: () => linkPanel?.blocker() ?? null,
});
new PasteForm({ wasm, form, state: () => connection.state, pending, portBlock: () => relay.portBlock });

// Debug/test hook, kept up to date through getters.
window.tabtunnelPage = {
  get session() { return connection.session; },
  get forwards() { return forwards.open; },
  get pending() { return pending.specs; },
  get state() { return connection.state; },
  /** The SSH client as the page uses it (`await client.get()` gives connect and the parsers), and its Worker. */
  get client() { return wasm; },
  get clientWorker() { return wasm.worker; },
  ready: null,
};

// A lab link (`?target=…&user=…&L=…`) prefills the form and queues its forwards, and
// never connects by itself (link_panel.js).
const link = readLabLink(window.location.search);
const linkPanel = isLabLink(link) ? new LabLinkPanel({ link, wasm, form, pending }) : null;

refresh();

// A link like https://relay/#token=… carries the access token in the fragment, which the
// browser never sends to any server; take it from the address bar at once. A damaged link
// must not stop the page: say so, and leave the field for the user to type the token in.
// A lab link's query stays (it holds nothing secret; a reload or a bookmark shows the
// same question again, and nothing connects on load), except entries named like secrets
// (password=…), which are taken out so they linger in no address bar, history entry or
// bookmark; the page says they were not used.
const fromLink = tokenFromFragment(window.location.hash);
if (fromLink || link.secrets.length > 0) {
  const search = link.secrets.length > 0 ? link.cleanSearch : window.location.search;
  history.replaceState(null, "", window.location.pathname + search);
}
if (fromLink) {
  if (fromLink.token) {
    $("token").value = fromLink.token;
  } else {
    $("token-field").hidden = false;
    showSessionError(
      "The access token in this link is damaged, so it was not used. If this relay asks for a token, type it in the Access token field, or ask the relay's operator for the link again.",
    );
  }
}

/** The token error shown last, so a better token clears it. */
let tokenError = null;
const useTargets = async (info) => {
  if (info) {
    connection.targetsLoaded = true;
    relay.publicHost = info.publicHost;
    relay.allowedSources = info.allowedSources;
    relay.portBlock = info.portBlock;
    if (info.tokenError) showSessionError(info.tokenError);
    else if (tokenError && $("session-error").textContent === tokenError) showSessionError("");
    tokenError = info.tokenError;
  }
  showPortBlock(info);
  refresh();
  if (linkPanel) await linkPanel.update(info);
  refresh();
};
// The relay tells a token holder their block of ports: ask again when the token changes.
const targetsWithToken = () => loadTargets(showSessionError, form.token.value.trim()).then(useTargets);
const targets = targetsWithToken();
form.token.addEventListener("change", targetsWithToken);
window.tabtunnelPage.ready = Promise.allSettled([targets, wasm.ready]).then(() => undefined);

/** "Your forward ports: 20000-20009 …" above the forwards, when the relay gives blocks. */
function showPortBlock(info) {
  const line = $("port-block");
  line.hidden = !info?.portBlock;
  if (!info?.portBlock) return;
  const ports = document.createElement("strong");
  ports.textContent = blockText(info.portBlock);
  line.replaceChildren("Your forward ports: ", ports,
    ` (the block of ${info.tokenHolder}'s access token). Use them as listen ports, or 0 for any free one of them.`);
}
