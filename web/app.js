// tabtunnel page: `ssh -L` from a browser tab.
//
// The SSH client is the wasm module served at /pkg/client_wasm.js. This file
// only drives the UI. Secrets (password, private key, passphrase) are read
// from the inputs at connect time and handed to the module; they are never
// written to storage, the URL or the console.

const KNOWN_HOSTS_KEY = "tabtunnel.knownHosts";
const STATS_INTERVAL_MS = 500;

const $ = (id) => document.getElementById(id);

const el = {
  connectForm: $("connect-form"),
  connectFields: $("connect-fields"),
  target: $("target"),
  username: $("username"),
  authPassword: $("auth-password"),
  authKey: $("auth-key"),
  passwordFields: $("password-fields"),
  keyFields: $("key-fields"),
  password: $("password"),
  keyfile: $("keyfile"),
  privateKey: $("private-key"),
  passphrase: $("passphrase"),
  connect: $("connect"),
  status: $("status"),
  sessionError: $("session-error"),

  hostkeyDialog: $("hostkey-dialog"),
  hostkeyTitle: $("hostkey-title"),
  hostkeyTarget: $("hostkey-target"),
  hostkeyAlgorithm: $("hostkey-algorithm"),
  hostkeyFingerprint: $("hostkey-fingerprint"),
  hostkeyAccept: $("hostkey-accept"),
  hostkeyReject: $("hostkey-reject"),

  mismatch: $("hostkey-mismatch"),
  mismatchTarget: $("mismatch-target"),
  mismatchOld: $("mismatch-old"),
  mismatchNew: $("mismatch-new"),
  mismatchOldAlg: $("mismatch-old-alg"),
  mismatchNewAlg: $("mismatch-new-alg"),
  hostkeyForget: $("hostkey-forget"),

  forwardForm: $("forward-form"),
  forwardFields: $("forward-fields"),
  forwardDisabledNote: $("forward-disabled-note"),
  forwardSpec: $("forward-spec"),
  forwardBind: $("forward-bind"),
  forwardPort: $("forward-port"),
  forwardHost: $("forward-host"),
  forwardHostport: $("forward-hostport"),
  addForward: $("add-forward"),
  forwardError: $("forward-error"),
  forwards: $("forwards"),
  forwardsEmpty: $("forwards-empty"),
  pendingArea: $("pending-area"),
  pendingList: $("pending-forwards"),

  pasteForm: $("paste-form"),
  pasteCommand: $("paste-command"),
  pasteFill: $("paste-fill"),
  pasteResult: $("paste-result"),
};

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

/** "disconnected" | "connecting" | "connected" */
let state = "disconnected";
/** The live session handle, or null. */
let session = null;
/** The current connection attempt (see connect()), or null. */
let attempt = null;
/** Rows in #forwards: { spec, fwd, row, closed } */
const forwardEntries = [];
/** Specs queued (from a pasted command) to add right after connecting. */
const pending = []; // { spec, error? }
let statsTimer = null;
let targetsLoaded = false;
/// What the relay says about reaching its forwards (from /api/targets): the name users
/// reach its host by, and the source networks forwards accept (empty: any).
const relayInfo = { publicHost: null, allowedSources: [] };
let addingForward = false;

// Debug/test hook, kept up to date through getters.
window.tabtunnelPage = {
  get session() { return session; },
  get forwards() { return forwardEntries.filter((e) => !e.closed).map((e) => e.fwd); },
  get pending() { return pending.map((p) => p.spec); },
  get state() { return state; },
  ready: null,
};

// ---------------------------------------------------------------------------
// The wasm module. Loaded dynamically so the rest of the page (targets,
// error messages) still works if it is missing or fails to start.
// ---------------------------------------------------------------------------

let wasm = null;
const wasmReady = (async () => {
  try {
    const mod = await import("/pkg/client_wasm.js");
    await mod.default();
    wasm = mod;
    return mod;
  } catch (err) {
    showError(el.sessionError, `The SSH client could not be loaded: ${messageOf(err)}`);
    throw err;
  }
})();
wasmReady.catch(() => {}); // reported above

async function getWasm() {
  if (wasm) return wasm;
  try {
    return await wasmReady;
  } catch (err) {
    throw new Error(`The SSH client could not be loaded: ${messageOf(err)}`);
  }
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

function messageOf(err) {
  if (err instanceof Error && err.message) return err.message;
  if (err && typeof err === "object" && typeof err.message === "string" && err.message) return err.message;
  if (typeof err === "string" && err) return err;
  return String(err ?? "unknown error");
}

function showError(region, text) {
  region.textContent = text;
}

function clearError(region) {
  region.textContent = "";
}

function formatBytes(n) {
  const v = Number(n) || 0;
  if (v < 1024) return `${v} B`;
  const units = ["KiB", "MiB", "GiB", "TiB", "PiB"];
  let x = v / 1024;
  let i = 0;
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024;
    i += 1;
  }
  return `${x < 100 ? x.toFixed(1) : Math.round(x)} ${units[i]}`;
}

function relayOrigin() {
  return window.location.origin;
}

function selectedTarget() {
  return el.target.value;
}

function authMethod() {
  return el.authKey.checked ? "key" : "password";
}

// ---------------------------------------------------------------------------
// Known hosts (localStorage)
// ---------------------------------------------------------------------------

// Like OpenSSH's known_hosts: one key per relay, target and key type. A server that
// offers another type is a new key to confirm, not a changed one.
function knownHostId(target, algorithm) {
  return `${relayOrigin()}|${target}|${algorithm}`;
}

function loadKnownHosts() {
  try {
    const raw = window.localStorage.getItem(KNOWN_HOSTS_KEY);
    if (!raw) return {};
    const obj = JSON.parse(raw);
    return obj && typeof obj === "object" && !Array.isArray(obj) ? obj : {};
  } catch {
    return {};
  }
}

function saveKnownHosts(obj) {
  try {
    window.localStorage.setItem(KNOWN_HOSTS_KEY, JSON.stringify(obj));
    return true;
  } catch {
    return false;
  }
}

function getKnownHost(target, algorithm) {
  const entry = loadKnownHosts()[knownHostId(target, algorithm)];
  return entry && typeof entry.fingerprint === "string" ? entry : null;
}

function rememberHost(target, fingerprint, algorithm) {
  const all = loadKnownHosts();
  all[knownHostId(target, algorithm)] = { fingerprint, algorithm, added: new Date().toISOString() };
  return saveKnownHosts(all);
}

/// Key types other than `algorithm` this browser knows for the target.
function knownOtherTypes(target, algorithm) {
  const prefix = `${relayOrigin()}|${target}|`;
  return Object.keys(loadKnownHosts())
    .filter((id) => id.startsWith(prefix) && id !== knownHostId(target, algorithm))
    .map((id) => id.slice(prefix.length));
}

function forgetHost(target, algorithm) {
  const all = loadKnownHosts();
  delete all[knownHostId(target, algorithm)];
  saveKnownHosts(all);
}

// ---------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------

async function loadTargets() {
  try {
    const resp = await fetch("/api/targets", { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!resp.ok) throw new Error(`the relay answered ${resp.status} ${resp.statusText}`.trim());
    const body = await resp.json();
    const list = Array.isArray(body?.targets) ? body.targets : null;
    if (!list) throw new Error("the relay's answer has no target list");
    const names = list
      .map((t) => (typeof t === "string" ? t : t?.name))
      .filter((n) => typeof n === "string" && n !== "");
    el.target.replaceChildren();
    if (names.length === 0) {
      el.target.append(new Option("(no targets)", ""));
      showError(el.sessionError, "This relay has no targets configured, so there is nothing to connect to. Ask the relay's operator to add one.");
      return;
    }
    for (const name of names) el.target.append(new Option(name, name));
    targetsLoaded = true;
    document.getElementById("token-field").hidden = body.token_required !== true;
    relayInfo.publicHost = typeof body.public_host === "string" && body.public_host !== "" ? body.public_host : null;
    relayInfo.allowedSources = Array.isArray(body.forward_allowed_sources)
      ? body.forward_allowed_sources.filter((n) => typeof n === "string")
      : [];
  } catch (err) {
    el.target.replaceChildren(new Option("(targets unavailable)", ""));
    showError(el.sessionError, `Could not load the list of targets: ${messageOf(err)}`);
  } finally {
    updateControls();
  }
}

// ---------------------------------------------------------------------------
// Control state
// ---------------------------------------------------------------------------

function setStatus(text, kind) {
  el.status.textContent = text;
  el.status.dataset.state = kind;
}

function updateControls() {
  const idle = state === "disconnected";
  // Set each control too, not only the fieldset, so `.disabled` tells the truth.
  el.connectFields.disabled = !idle;
  for (const c of [document.getElementById("token"), el.username, el.authPassword, el.authKey, el.password, el.keyfile, el.privateKey, el.passphrase]) {
    c.disabled = !idle;
  }
  // The target picker stays disabled when there is nothing to pick.
  el.target.disabled = !idle || !targetsLoaded;
  el.connect.textContent = state === "connected" ? "Disconnect" : state === "connecting" ? "Cancel" : "Connect";
  el.connect.classList.toggle("primary", state !== "connected");
  el.connect.setAttribute("aria-busy", state === "connecting" ? "true" : "false");

  const connected = state === "connected";
  el.forwardFields.disabled = !connected;
  for (const c of [el.forwardSpec, el.forwardBind, el.forwardPort, el.forwardHost, el.forwardHostport]) {
    c.disabled = !connected;
  }
  el.addForward.disabled = !connected || addingForward;
  el.forwardDisabledNote.hidden = connected;

  el.forwardsEmpty.hidden = forwardEntries.length > 0;
  el.pendingArea.hidden = pending.length === 0;
}

function setAuthVisibility() {
  const key = authMethod() === "key";
  el.keyFields.hidden = !key;
  el.passwordFields.hidden = key;
}

// ---------------------------------------------------------------------------
// Host key dialog
// ---------------------------------------------------------------------------

let dialogResolve = null;
let dialogReturnFocus = null;

function askHostKey(target, fingerprint, algorithm, otherTypes = []) {
  // Only one question at a time; a new one refuses the old one.
  if (dialogResolve) closeHostKeyDialog(false);
  const other = document.getElementById("hostkey-other");
  other.hidden = otherTypes.length === 0;
  other.textContent = otherTypes.length === 0 ? "" :
    `Warning: this browser already knows a ${otherTypes.join(", ")} key for ${target}, and the server now shows ` +
    `a ${algorithm} key. The server may have been reconfigured, or someone may be intercepting the connection. ` +
    "Accept only if the server's operator confirms this fingerprint.";
  el.hostkeyTarget.textContent = target;
  el.hostkeyAlgorithm.textContent = algorithm || "Host";
  el.hostkeyFingerprint.textContent = fingerprint;
  dialogReturnFocus = document.activeElement;
  el.hostkeyDialog.hidden = false;
  document.body.classList.add("modal-open");
  el.hostkeyTitle.focus();
  return new Promise((resolve) => {
    dialogResolve = resolve;
  });
}

function closeHostKeyDialog(answer) {
  const resolve = dialogResolve;
  dialogResolve = null;
  el.hostkeyDialog.hidden = true;
  document.body.classList.remove("modal-open");
  const back = dialogReturnFocus && dialogReturnFocus !== document.body && document.contains(dialogReturnFocus)
    ? dialogReturnFocus
    : el.connect;
  if (typeof back.focus === "function") back.focus();
  dialogReturnFocus = null;
  if (resolve) resolve(answer);
}

// Keyboard-interactive questions (and a password the server wants but was not given).
let promptResolve = null;

function askPrompts(target, request) {
  if (promptResolve) closePromptDialog(null);
  const title = $("prompt-title");
  title.textContent = request.name ? `${target}: ${request.name}` : `${target} asks`;
  $("prompt-instructions").textContent = request.instructions || "";
  const fields = $("prompt-fields");
  fields.replaceChildren();
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
    fields.append(label, input);
  });
  $("prompt-dialog").hidden = false;
  document.body.classList.add("modal-open");
  const first = fields.querySelector("input");
  (first || $("prompt-submit")).focus();
  return new Promise((resolve) => {
    promptResolve = resolve;
  });
}

function closePromptDialog(answers) {
  const resolve = promptResolve;
  promptResolve = null;
  $("prompt-dialog").hidden = true;
  $("prompt-fields").replaceChildren(); // answers do not linger in the page
  document.body.classList.remove("modal-open");
  if (resolve) resolve(answers);
}

$("prompt-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const answers = Array.from(document.querySelectorAll("#prompt-fields .prompt-input")).map((i) => i.value);
  closePromptDialog(answers);
});
$("prompt-cancel").addEventListener("click", () => closePromptDialog(null));
$("prompt-dialog").addEventListener("keydown", (ev) => {
  if (ev.key === "Escape") {
    ev.preventDefault();
    closePromptDialog(null);
  }
});

el.hostkeyAccept.addEventListener("click", () => closeHostKeyDialog(true));
el.hostkeyReject.addEventListener("click", () => closeHostKeyDialog(false));
el.hostkeyDialog.addEventListener("keydown", (ev) => {
  if (ev.key === "Escape") {
    ev.preventDefault();
    closeHostKeyDialog(false);
  } else if (ev.key === "Tab") {
    // Keep focus inside the dialog.
    const items = [el.hostkeyAccept, el.hostkeyReject];
    const i = items.indexOf(document.activeElement);
    ev.preventDefault();
    const next = ev.shiftKey ? (i <= 0 ? items.length - 1 : i - 1) : (i + 1) % items.length;
    items[next].focus();
  }
});

function showMismatch(target, known, offered) {
  el.mismatchTarget.textContent = target;
  el.mismatchOld.textContent = known.fingerprint;
  el.mismatchNew.textContent = offered.fingerprint;
  el.mismatchOldAlg.textContent = known.algorithm ? ` (${known.algorithm})` : "";
  el.mismatchNewAlg.textContent = offered.algorithm ? ` (${offered.algorithm})` : "";
  el.mismatch.dataset.target = target;
  el.mismatch.dataset.algorithm = known.algorithm || "";
  el.mismatch.hidden = false;
  el.mismatch.scrollIntoView({ block: "nearest" });
}

function hideMismatch() {
  el.mismatch.hidden = true;
  delete el.mismatch.dataset.target;
  delete el.mismatch.dataset.algorithm;
}

el.hostkeyForget.addEventListener("click", () => {
  const target = el.mismatch.dataset.target;
  if (!target) return;
  forgetHost(target, el.mismatch.dataset.algorithm || "");
  hideMismatch();
  showError(el.sessionError, "");
  setStatus(`disconnected (old host key for ${target} forgotten; connect again to check the new key)`, "disconnected");
  el.connect.focus();
});

// ---------------------------------------------------------------------------
// Connect / disconnect
// ---------------------------------------------------------------------------

async function connect() {
  clearError(el.sessionError);
  hideMismatch();

  const target = selectedTarget();
  const username = el.username.value.trim();
  if (!target) {
    showError(el.sessionError, targetsLoaded ? "Pick a target." : "No target to connect to: the relay's target list is unavailable or empty.");
    el.target.focus();
    return;
  }
  if (!username) {
    showError(el.sessionError, "Enter a user name.");
    el.username.focus();
    return;
  }

  let options = { target, username };
  const token = document.getElementById("token").value.trim();
  if (token) options.token = token;
  if (authMethod() === "key") {
    const key = el.privateKey.value.trim();
    if (!key) {
      showError(el.sessionError, "Paste a private key or choose a key file.");
      el.privateKey.focus();
      return;
    }
    options.privateKey = `${key}\n`;
    if (el.passphrase.value !== "") options.passphrase = el.passphrase.value;
  } else if (el.password.value !== "") {
    // Empty is fine: the server's questions (password, codes) are then asked in a dialog.
    options.password = el.password.value;
  }

  const a = {
    target,
    username,
    cancelled: false,
    closedReason: null,
    hostKey: null, // { fingerprint, algorithm } as offered
    mismatch: null, // { known, offered }
    rejected: false,
    asked: false,
  };
  attempt = a;
  state = "connecting";
  setStatus(`connecting to ${target} as ${username}…`, "connecting");
  updateControls();

  options.onHostKey = async (fingerprint, algorithm, pinned) => {
    fingerprint = String(fingerprint);
    algorithm = algorithm == null ? "" : String(algorithm);
    a.asked = true;
    a.hostKey = { fingerprint, algorithm };
    if (a.cancelled) return false;
    const known = getKnownHost(target, algorithm);
    if (known) {
      if (known.fingerprint === fingerprint) return true;
      a.mismatch = { known, offered: { fingerprint, algorithm } };
      return false;
    }
    const others = knownOtherTypes(target, algorithm);
    if (pinned && others.length === 0) {
      // The relay's operator pinned this key and it matched: nothing to ask. A key
      // remembered earlier wins above, and a new key type is asked below, so a relay
      // cannot swap in a key of its own silently.
      rememberHost(target, fingerprint, algorithm);
      return true;
    }
    const ok = await askHostKey(target, fingerprint, algorithm, others);
    if (a.cancelled) return false;
    if (!ok) {
      a.rejected = true;
      return false;
    }
    rememberHost(target, fingerprint, algorithm);
    return true;
  };
  options.onPrompt = (request) => (a.cancelled ? null : askPrompts(target, request));
  options.onClose = (reason) => onSessionClosed(a, reason);

  let s = null;
  let error = null;
  try {
    const mod = await getWasm();
    if (a.cancelled) return;
    s = await mod.connect(options);
  } catch (err) {
    error = err;
  } finally {
    // Drop our references to the secrets; the inputs keep them for reconnecting.
    options = null;
  }

  if (attempt !== a) {
    // Superseded or cancelled: do not keep a late session.
    if (s) s.close().catch(() => {});
    return;
  }

  if (error) {
    attempt = null;
    state = "disconnected";
    // A question the server no longer waits for must not stay on screen.
    if (promptResolve) closePromptDialog(null);
    if (dialogResolve) closeHostKeyDialog(false);
    if (a.mismatch) {
      showMismatch(target, a.mismatch.known, a.mismatch.offered);
      showError(el.sessionError, `Not connected: the host key of ${target} has changed (see the warning below).`);
      setStatus("disconnected (host key mismatch)", "error");
    } else if (a.rejected) {
      showError(el.sessionError, "host key refused");
      setStatus("disconnected (host key refused)", "error");
    } else {
      showError(el.sessionError, messageOf(error));
      setStatus("disconnected", "error");
    }
    updateControls();
    return;
  }

  // Belt and braces: if the module never asked us about the key, check it now.
  const fp = s.hostKeyFingerprint ? String(s.hostKeyFingerprint) : (a.hostKey?.fingerprint ?? "");
  if (!a.asked && fp) {
    const algorithm = s.hostKeyAlgorithm ? String(s.hostKeyAlgorithm) : "";
    const known = getKnownHost(target, algorithm);
    if (known && known.fingerprint !== fp) {
      attempt = null;
      state = "disconnected";
      s.close().catch(() => {});
      showMismatch(target, known, { fingerprint: fp, algorithm });
      showError(el.sessionError, `Not connected: the host key of ${target} has changed (see the warning below).`);
      setStatus("disconnected (host key mismatch)", "error");
      updateControls();
      return;
    }
  }

  session = s;
  state = "connected";
  // Rows from an earlier session are closed; start with a clean list.
  for (const e of forwardEntries.filter((x) => x.closed)) removeEntry(e);
  setStatus(`connected as ${username}@${target}, host key ${fp}`, "connected");
  updateControls();

  if (a.closedReason !== null) {
    // The session ended before we got here.
    onSessionClosed(a, a.closedReason);
    return;
  }
  await addPendingForwards({ retryFailed: true });
}

function onSessionClosed(a, reason) {
  const text = reason == null || reason === "" ? "connection closed" : String(reason);
  if (a.handled) return;
  if (state === "connecting" && attempt === a) {
    // Still inside connect(): remember; connect() handles the result.
    a.closedReason = text;
    return;
  }
  if (attempt !== a) return; // an abandoned attempt
  a.handled = true;
  attempt = null;
  session = null;
  state = "disconnected";
  markAllForwardsClosed();
  if (a.userClosing) {
    setStatus("disconnected", "disconnected");
  } else {
    setStatus(`closed: ${text}`, "closed");
  }
  updateControls();
}

async function disconnect() {
  const a = attempt;
  const s = session;
  if (!a || !s) return;
  a.userClosing = true;
  el.connect.disabled = true;
  try {
    await s.close();
  } catch (err) {
    showError(el.sessionError, messageOf(err));
  } finally {
    el.connect.disabled = false;
  }
  // onClose may or may not have been called by now; finish either way.
  onSessionClosed(a, "disconnected");
}

function cancelConnect() {
  const a = attempt;
  if (!a) return;
  a.cancelled = true;
  attempt = null;
  if (dialogResolve) closeHostKeyDialog(false);
  if (promptResolve) closePromptDialog(null);
  state = "disconnected";
  setStatus("disconnected (cancelled)", "disconnected");
  updateControls();
}

el.connectForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  if (state === "connected") disconnect();
  else if (state === "connecting") cancelConnect();
  else connect();
});

el.authPassword.addEventListener("change", setAuthVisibility);
el.authKey.addEventListener("change", setAuthVisibility);

el.keyfile.addEventListener("change", async () => {
  const file = el.keyfile.files && el.keyfile.files[0];
  if (!file) return;
  clearError(el.sessionError);
  if (file.size > 64 * 1024) {
    showError(el.sessionError, `${file.name} is too large to be a private key.`);
    return;
  }
  try {
    el.privateKey.value = await file.text();
    el.authKey.checked = true;
    setAuthVisibility();
  } catch (err) {
    showError(el.sessionError, `Could not read ${file.name}: ${messageOf(err)}`);
  }
});

// ---------------------------------------------------------------------------
// Forwards
// ---------------------------------------------------------------------------

function bracketIfV6(s) {
  return s.includes(":") && !s.startsWith("[") ? `[${s}]` : s;
}

function specFromFields() {
  const bind = el.forwardBind.value.trim();
  const port = el.forwardPort.value.trim();
  const host = el.forwardHost.value.trim();
  const hostport = el.forwardHostport.value.trim();
  if (!bind && !port && !host && !hostport) return "";
  const parts = [port, bracketIfV6(host), hostport];
  if (bind) parts.unshift(bracketIfV6(bind));
  return parts.join(":");
}

for (const input of [el.forwardBind, el.forwardPort, el.forwardHost, el.forwardHostport]) {
  input.addEventListener("input", () => {
    el.forwardSpec.value = specFromFields();
    clearError(el.forwardError);
  });
}
el.forwardSpec.addEventListener("input", () => clearError(el.forwardError));

el.forwardForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  clearError(el.forwardError);
  const spec = el.forwardSpec.value.trim() || specFromFields();
  if (!spec) {
    showError(el.forwardError, "Enter a forward such as 10080:mail.example.com:110, or fill in the fields.");
    el.forwardSpec.focus();
    return;
  }
  addingForward = true;
  updateControls();
  try {
    const ok = await addForward(spec);
    if (ok) {
      el.forwardSpec.value = "";
      el.forwardBind.value = "";
      el.forwardPort.value = "";
      el.forwardHost.value = "";
      el.forwardHostport.value = "";
      el.forwardSpec.focus();
    } else {
      el.forwardSpec.value = spec;
      el.forwardSpec.focus();
    }
  } finally {
    addingForward = false;
    updateControls();
  }
});

/** Validates and opens one forward. Returns true on success; errors go to #forward-error. */
async function addForward(spec) {
  let mod;
  try {
    mod = await getWasm();
    mod.parseForwardSpec(spec);
  } catch (err) {
    showError(el.forwardError, messageOf(err));
    return false;
  }
  const s = session;
  if (!s || state !== "connected") {
    showError(el.forwardError, "Not connected.");
    return false;
  }
  let fwd;
  try {
    fwd = await s.forward(spec, { check: document.getElementById("forward-check").checked });
  } catch (err) {
    showError(el.forwardError, messageOf(err));
    return false;
  }
  if (session !== s) {
    // The session ended while the forward was being opened.
    fwd.close().catch(() => {});
    showError(el.forwardError, `${spec}: the session closed before the forward was ready.`);
    return false;
  }
  addForwardRow(spec, fwd);
  return true;
}

function addForwardRow(spec, fwd) {
  const row = document.createElement("li");
  row.className = "forward-row";
  row.dataset.spec = spec;
  row.dataset.state = "open";

  const head = document.createElement("div");
  head.className = "forward-head";
  const specEl = document.createElement("code");
  specEl.className = "spec";
  specEl.textContent = spec;
  const stateEl = document.createElement("span");
  stateEl.className = "state";
  stateEl.textContent = "open";
  head.append(specEl, stateEl);

  const listenLine = addressLine("listen-line", "Listening on ", "listen", String(fwd.listen ?? ""),
    "Copy listen address");

  // Where users connect and who else can: a forward bound beyond loopback is open to
  // everyone who can reach the relay host, which the user should know before sharing it.
  const reachable = reachOf(String(fwd.listen ?? ""));
  const lines = [listenLine];
  if (reachable.connect) {
    lines.unshift(addressLine("listen-line connect-line", "Connect to ", "connect", reachable.connect,
      "Copy address"));
  }
  const reach = document.createElement("p");
  reach.className = "reach";
  reach.textContent = reachable.sentence;
  lines.push(reach);

  const stats = document.createElement("div");
  stats.className = "stats";

  const actions = document.createElement("div");
  actions.className = "row-actions";
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "remove small";
  remove.textContent = "Remove";
  remove.setAttribute("aria-label", `Remove forward ${spec}`);
  actions.append(remove);

  const foot = document.createElement("div");
  foot.className = "forward-foot";
  foot.append(stats, actions);

  row.append(head, ...lines, foot);
  el.forwards.append(row);

  const entry = { spec, fwd, row, stateEl, statsEl: stats, removeBtn: remove, closed: false };
  forwardEntries.push(entry);
  remove.addEventListener("click", () => removeForward(entry));
  renderStats(entry, { connections: 0, active: 0, bytesUp: 0, bytesDown: 0 });
  refreshStats(entry);
  ensureStatsTimer();
  updateControls();
}

function renderStats(entry, st) {
  const c = Number(st?.connections) || 0;
  const a = Number(st?.active) || 0;
  const up = formatBytes(st?.bytesUp);
  const down = formatBytes(st?.bytesDown);
  const failures = Number(st?.failures) || 0;
  const lastError = st?.lastError || "";
  let text = `connections ${c} · active ${a} · up ${up} · down ${down}`;
  if (failures > 0) text += ` · failed ${failures}: ${lastError}`;
  if (entry.statsEl.dataset.text === text) return;
  entry.statsEl.dataset.text = text;
  const parts = [
    stat("connections", String(c)),
    stat("active", String(a)),
    stat("bytes up", up),
    stat("bytes down", down),
  ];
  if (failures > 0) {
    parts.push(stat("failed", String(failures)));
    // Why connections fail (e.g. the SSH server forbids the destination) belongs on the row.
    const why = document.createElement("div");
    why.className = "last-error";
    why.setAttribute("role", "status");
    why.textContent = lastError;
    parts.push(why);
  }
  entry.statsEl.replaceChildren(...parts);
}

function stat(label, value) {
  const span = document.createElement("span");
  span.className = "stat";
  const l = document.createElement("span");
  l.className = "stat-label";
  l.textContent = `${label} `;
  const v = document.createElement("span");
  v.className = "stat-value";
  v.textContent = value;
  span.append(l, v);
  return span;
}

function refreshStats(entry) {
  if (entry.closed) return;
  try {
    renderStats(entry, entry.fwd.stats());
  } catch {
    // A forward that can no longer report is left as it was.
  }
}

function ensureStatsTimer() {
  if (statsTimer !== null) return;
  statsTimer = window.setInterval(() => {
    const open = forwardEntries.filter((e) => !e.closed);
    if (open.length === 0) {
      window.clearInterval(statsTimer);
      statsTimer = null;
      return;
    }
    for (const e of open) refreshStats(e);
  }, STATS_INTERVAL_MS);
}

function markClosed(entry, label = "closed") {
  if (!entry.closed) refreshStats(entry); // last numbers
  entry.closed = true;
  entry.row.dataset.state = "closed";
  entry.row.classList.add("closed");
  entry.stateEl.textContent = label;
  entry.removeBtn.disabled = false;
  entry.removeBtn.textContent = "Remove";
}

function markAllForwardsClosed() {
  for (const e of forwardEntries) markClosed(e);
}

function removeEntry(entry) {
  const i = forwardEntries.indexOf(entry);
  if (i >= 0) forwardEntries.splice(i, 1);
  entry.row.remove();
  updateControls();
}

async function removeForward(entry) {
  clearError(el.forwardError);
  if (entry.closed) {
    removeEntry(entry);
    el.forwardSpec.focus();
    return;
  }
  entry.removeBtn.disabled = true;
  entry.stateEl.textContent = "closing";
  entry.row.dataset.state = "closing";
  try {
    await entry.fwd.close();
  } catch (err) {
    if (!entry.closed) {
      entry.removeBtn.disabled = false;
      entry.stateEl.textContent = "open";
      entry.row.dataset.state = "open";
      showError(el.forwardError, messageOf(err));
      return;
    }
  }
  entry.closed = true;
  removeEntry(entry);
  if (!el.forwardFields.disabled) el.forwardSpec.focus();
}

/**
 * Who can reach a forward listening on `listen` ("127.0.0.1:20001", "0.0.0.0:20001",
 * "[::]:20001"), and the address to give them: the relay's public_host if it has one,
 * else for a wildcard bind the name this page was loaded from.
 */
function reachOf(listen) {
  const colon = listen.lastIndexOf(":");
  const host = listen.slice(0, colon).replace(/^\[|\]$/g, "");
  const port = listen.slice(colon + 1);
  // The relay closes clients from outside its allowed sources, loopback ones included.
  const sources = relayInfo.allowedSources;
  const only = sources.length > 0 ? `, from ${sources.join(" or ")} only` : "";
  if (colon < 0 || host === "localhost" || host === "::1" || host.startsWith("127.")) {
    return {
      connect: null,
      sentence: `Only programs on the relay host (any user on it) can use this forward${only}.`,
    };
  }
  const wildcard = host === "0.0.0.0" || host === "::";
  const pageHost = location.hostname.replace(/^\[|\]$/g, "");
  const name = relayInfo.publicHost ?? (wildcard ? pageHost : host);
  const connect = name.includes(":") ? `[${name}]:${port}` : `${name}:${port}`;
  // A page loaded as localhost (through a tunnel, say) must not make a forward open to the
  // whole network look local.
  const who = wildcard && relayInfo.publicHost == null
    ? `Anyone who can reach any address of the relay host on port ${port}`
    : `Anyone who can reach ${connect}`;
  return { connect, sentence: `${who} can use this forward${only}.` };
}

/** A line "LABEL <code>ADDRESS</code> [Copy]" of a forward's row. */
function addressLine(lineClass, label, codeClass, address, copyLabel) {
  const line = document.createElement("div");
  line.className = lineClass;
  const labelEl = document.createElement("span");
  labelEl.className = "label";
  labelEl.textContent = label;
  const code = document.createElement("code");
  code.className = codeClass;
  code.textContent = address;
  const copy = document.createElement("button");
  copy.type = "button";
  copy.className = "copy small";
  copy.textContent = "Copy";
  copy.setAttribute("aria-label", `${copyLabel} ${address}`);
  copy.addEventListener("click", () => copyListen(code, copy));
  line.append(labelEl, code, copy);
  return line;
}

async function copyListen(codeEl, button) {
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

// ---------------------------------------------------------------------------
// Pending forwards (from a pasted command)
// ---------------------------------------------------------------------------

function renderPending() {
  el.pendingList.replaceChildren();
  for (const p of pending) {
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
      const i = pending.indexOf(p);
      if (i >= 0) pending.splice(i, 1);
      renderPending();
    });
    li.append(code, note, drop);
    el.pendingList.append(li);
  }
  updateControls();
}

async function addPendingForwards({ retryFailed = false } = {}) {
  if (retryFailed) {
    for (const p of pending) delete p.error;
    renderPending();
  }
  while (pending.length > 0 && state === "connected") {
    const p = pending.find((x) => !x.error);
    if (!p) break;
    const ok = await addForward(p.spec);
    if (ok) {
      const i = pending.indexOf(p);
      if (i >= 0) pending.splice(i, 1);
    } else {
      p.error = el.forwardError.textContent || "failed";
    }
    renderPending();
  }
}

// ---------------------------------------------------------------------------
// Paste an ssh command
// ---------------------------------------------------------------------------

function pasteLine(text, kind = "info") {
  const p = document.createElement("p");
  p.className = `paste-line ${kind}`;
  if (kind === "error") p.setAttribute("role", "alert");
  p.textContent = text;
  el.pasteResult.append(p);
}

el.pasteForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  el.pasteResult.replaceChildren();
  const command = el.pasteCommand.value.trim();
  if (!command) {
    pasteLine("Paste a command such as: ssh -N -L 1100:mail.example.com:110 alice@demo", "error");
    el.pasteCommand.focus();
    return;
  }
  let parsed;
  try {
    const mod = await getWasm();
    parsed = mod.parseSshCommand(command);
  } catch (err) {
    pasteLine(messageOf(err), "error");
    el.pasteCommand.focus();
    return;
  }

  const editable = state === "disconnected";

  // User name.
  if (parsed.user) {
    if (editable) {
      el.username.value = parsed.user;
      pasteLine(`user name: ${parsed.user}`);
    } else if (parsed.user !== el.username.value.trim()) {
      pasteLine(`user ${parsed.user} not applied while connected (as ${el.username.value.trim()})`, "warn");
    }
  }

  // Target.
  if (parsed.host) {
    const match = Array.from(el.target.options).find((o) => o.value !== "" && o.value === parsed.host);
    if (match) {
      if (editable) {
        el.target.value = match.value;
        pasteLine(`target: ${match.value}`);
      } else if (match.value !== el.target.value) {
        pasteLine(`target ${match.value} not applied while connected (to ${el.target.value})`, "warn");
      }
    } else {
      pasteLine(`no target named ${parsed.host} on this relay; pick one`, "warn");
    }
  }

  // Port.
  if (parsed.port !== undefined && parsed.port !== null) {
    pasteLine(`-p ${parsed.port}: the port is fixed by the relay's target config`, "warn");
  }

  // Ignored options.
  const ignored = Array.isArray(parsed.ignored) ? parsed.ignored : [];
  if (ignored.length > 0) pasteLine(`ignored: ${ignored.join(" ")}`, "warn");

  // Forwards.
  const specs = Array.isArray(parsed.forwards) ? parsed.forwards.map(String) : [];
  if (specs.length === 0) {
    pasteLine("no -L forwards in the command");
  } else if (state === "connected") {
    pasteLine(`adding ${specs.length} forward${specs.length === 1 ? "" : "s"}: ${specs.join(", ")}`);
    for (const spec of specs) pending.push({ spec });
    renderPending();
    await addPendingForwards();
  } else {
    for (const spec of specs) {
      if (!pending.some((p) => p.spec === spec)) pending.push({ spec });
    }
    renderPending();
    pasteLine(
      `${specs.length} forward${specs.length === 1 ? "" : "s"} queued (${specs.join(", ")}); ` +
        "added right after connecting",
    );
  }
});

// ---------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------

setAuthVisibility();
updateControls();
// A link like https://relay/#token=… carries the access token in the fragment, which the
// browser never sends to any server; take it from the address bar at once.
// A damaged link (a stray % from a mail client's line wrap) must not stop the page:
// say so, and leave the field for the user to type the token in.
{
  const match = window.location.hash.match(/(?:^#|&)token=([^&]*)/);
  if (match) {
    history.replaceState(null, "", window.location.pathname + window.location.search);
    let token = null;
    try {
      token = decodeURIComponent(match[1]);
    } catch {
      // URIError: a % not followed by two hex digits, or bytes that are not UTF-8.
    }
    if (token) {
      document.getElementById("token").value = token;
    } else {
      document.getElementById("token-field").hidden = false;
      showError(
        el.sessionError,
        "The access token in this link is damaged, so it was not used. If this relay asks for a token, type it in the Access token field, or ask the relay's operator for the link again.",
      );
    }
  }
}

window.tabtunnelPage.ready = Promise.allSettled([loadTargets(), wasmReady]).then(() => undefined);
