// The relay's targets and what it says about reaching its forwards (/api/targets).

import { parseTargetsAnswer } from "./relay_info.js";
import { messageOf } from "./text.js";

const $ = (id) => document.getElementById(id);

/**
 * Fills the target picker. Returns the relay's info ({ publicHost, allowedSources,
 * tokenRequired }) when there is something to connect to, else null; `showError(text)`
 * says why not.
 */
export async function loadTargets(showError) {
  const select = $("target");
  try {
    const resp = await fetch("/api/targets", { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!resp.ok) throw new Error(`the relay answered ${resp.status} ${resp.statusText}`.trim());
    const info = parseTargetsAnswer(await resp.json());
    select.replaceChildren();
    if (info.names.length === 0) {
      select.append(new Option("(no targets)", ""));
      showError("This relay has no targets configured, so there is nothing to connect to. Ask the relay's operator to add one.");
      return null;
    }
    for (const name of info.names) select.append(new Option(name, name));
    $("token-field").hidden = !info.tokenRequired;
    return info;
  } catch (err) {
    select.replaceChildren(new Option("(targets unavailable)", ""));
    showError(`Could not load the list of targets: ${messageOf(err)}`);
    return null;
  }
}
