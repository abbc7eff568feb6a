// tabtunnel page: `ssh -L` from a browser tab. The SSH client is the wasm module at
// /pkg/client_wasm.js, run in a worker (wasm.js, client_worker.js); these modules drive the UI. This one builds them and wires them
// together; none of the others imports another's state.

import { Connection } from "./connection.js";
import { renderControls } from "./controls.js";
import { HostKeyDialog, PromptDialog } from "./dialogs.js";
import { ForwardList } from "./forwards.js";
import { LoginForm } from "./login_form.js";
import { MismatchPanel } from "./mismatch.js";
import { PasteForm } from "./paste.js";
import { PendingForwards } from "./pending.js";
import { tokenFromFragment } from "./relay_info.js";
import { loadTargets } from "./targets.js";
import { WasmClient } from "./wasm.js";

const $ = (id) => document.getElementById(id);
const showSessionError = (text) => {
  $("session-error").textContent = text;
};

/** What the relay says about reaching its forwards; filled in when the targets arrive. */
const relay = { publicHost: null, allowedSources: [] };

const wasm = new WasmClient(showSessionError);
const form = new LoginForm(showSessionError);
// The parts reach each other through closures, which run only once all are built (no
// constructor calls them).
const refresh = () =>
  renderControls({
    state: connection.state,
    loginControls: form.controls,
    targetsLoaded: connection.targetsLoaded,
    adding: forwards.adding,
    forwardCount: forwards.rows.length,
    pendingCount: pending.items.length,
  });
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
  afterConnect: () => pending.addAll({ retryFailed: true }),
  onChange: refresh,
});
new PasteForm({ wasm, form, state: () => connection.state, pending });

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

refresh();

// A link like https://relay/#token=… carries the access token in the fragment, which the
// browser never sends to any server; take it from the address bar at once. A damaged link
// must not stop the page: say so, and leave the field for the user to type the token in.
const fromLink = tokenFromFragment(window.location.hash);
if (fromLink) {
  history.replaceState(null, "", window.location.pathname + window.location.search);
  if (fromLink.token) {
    $("token").value = fromLink.token;
  } else {
    $("token-field").hidden = false;
    showSessionError(
      "The access token in this link is damaged, so it was not used. If this relay asks for a token, type it in the Access token field, or ask the relay's operator for the link again.",
    );
  }
}

const targets = loadTargets(showSessionError).then((info) => {
  if (info) {
    connection.targetsLoaded = true;
    relay.publicHost = info.publicHost;
    relay.allowedSources = info.allowedSources;
  }
  refresh();
});
window.tabtunnelPage.ready = Promise.allSettled([targets, wasm.ready]).then(() => undefined);
