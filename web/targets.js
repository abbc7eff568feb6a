// The relay's targets and what it says about reaching its forwards (/api/targets), and,
// for a token holder, their block of forward ports.

import { parseTargetsAnswer } from "./relay_info.js";
import { messageOf } from "./text.js";

const $ = (id) => document.getElementById(id);

/**
 * Fills the target picker, keeping the pick when the name is still offered. `token`
 * (maybe empty) goes in an Authorization header, never in the URL, which proxies and
 * access logs keep; the relay then names its holder and block, or says why it did not
 * take it (401, 429: the rest of the answer still comes). Returns the relay's info (see
 * parseTargetsAnswer) when there is something to connect to, else null; `showError(text)`
 * says why not.
 */
export async function loadTargets(showError, token = "") {
  const select = $("target");
  const picked = select.value;
  try {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    const resp = await fetch("/api/targets", { headers, cache: "no-store" });
    if (!resp.ok && resp.status !== 401 && resp.status !== 429) {
      throw new Error(`the relay answered ${resp.status} ${resp.statusText}`.trim());
    }
    const info = parseTargetsAnswer(await resp.json());
    select.replaceChildren();
    if (info.names.length === 0) {
      select.append(new Option("(no targets)", ""));
      showError("This relay has no targets configured, so there is nothing to connect to. Ask the relay's operator to add one.");
      return null;
    }
    for (const name of info.names) select.append(new Option(name, name));
    if (info.names.includes(picked)) select.value = picked;
    $("token-field").hidden = !info.tokenRequired;
    return info;
  } catch (err) {
    select.replaceChildren(new Option("(targets unavailable)", ""));
    showError(`Could not load the list of targets: ${messageOf(err)}`);
    return null;
  }
}
