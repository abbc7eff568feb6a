// Which controls are usable, from the page's state. Each control is set too, not only its
// fieldset, so `.disabled` tells the truth.

const $ = (id) => document.getElementById(id);

/**
 * `state`: "disconnected" | "connecting" | "connected"; `loginControls`: the form's
 * inputs; `targetsLoaded`, `adding` (an Add is under way), `forwardCount`, `pendingCount`.
 */
export function renderControls({ state, loginControls, targetsLoaded, adding, forwardCount, pendingCount }) {
  const idle = state === "disconnected";
  $("connect-fields").disabled = !idle;
  for (const c of loginControls) c.disabled = !idle;
  // The target picker stays disabled when there is nothing to pick.
  $("target").disabled = !idle || !targetsLoaded;
  const button = $("connect");
  button.textContent = state === "connected" ? "Disconnect" : state === "connecting" ? "Cancel" : "Connect";
  button.classList.toggle("primary", state !== "connected");
  button.setAttribute("aria-busy", state === "connecting" ? "true" : "false");

  const connected = state === "connected";
  $("forward-fields").disabled = !connected;
  for (const id of ["forward-spec", "forward-bind", "forward-port", "forward-host", "forward-hostport"]) {
    $(id).disabled = !connected;
  }
  $("add-forward").disabled = !connected || adding;
  $("forward-disabled-note").hidden = connected;

  $("forwards-empty").hidden = forwardCount > 0;
  $("pending-area").hidden = pendingCount === 0;
}
