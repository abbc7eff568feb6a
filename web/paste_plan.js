// What a pasted `ssh …` line changes on the page. No DOM here: tested by
// web/test/paste_plan.test.js.

import { forwardsWord } from "./text.js";

/**
 * From `parsed` (the wasm module's parseSshCommand: { user, host, port, forwards, dynamic,
 * remote, ignored }: `forwards` are the -L specs, `dynamic` the -D ones, queued as
 * "-D spec", `remote` the -R ones, queued as "-R spec")
 * and the page as it is ({ state, username, target, targetNames }), what to do:
 * { user, target } to fill in (null: leave the field), `lines` to show as [text, kind]
 * ("info" or "warn"), `specs` to queue, and `addNow` when they are added at once
 * (connected) rather than after connecting.
 */
export function planPaste(parsed, page) {
  const editable = page.state === "disconnected";
  const plan = { user: null, target: null, lines: [], specs: [], addNow: false };
  const say = (text, kind = "info") => plan.lines.push([text, kind]);

  if (parsed.user) {
    if (editable) {
      plan.user = parsed.user;
      say(`user name: ${parsed.user}`);
    } else if (parsed.user !== page.username) {
      say(`user ${parsed.user} not applied while connected (as ${page.username})`, "warn");
    }
  }

  if (parsed.host) {
    const match = page.targetNames.find((name) => name !== "" && name === parsed.host);
    if (match) {
      if (editable) {
        plan.target = match;
        say(`target: ${match}`);
      } else if (match !== page.target) {
        say(`target ${match} not applied while connected (to ${page.target})`, "warn");
      }
    } else {
      say(`no target named ${parsed.host} on this relay; pick one`, "warn");
    }
  }

  if (parsed.port !== undefined && parsed.port !== null) {
    say(`-p ${parsed.port}: the port is fixed by the relay's target config`, "warn");
  }

  const ignored = Array.isArray(parsed.ignored) ? parsed.ignored : [];
  if (ignored.length > 0) say(`ignored: ${ignored.join(" ")}`, "warn");

  const specs = Array.isArray(parsed.forwards) ? parsed.forwards.map(String) : [];
  if (Array.isArray(parsed.dynamic)) specs.push(...parsed.dynamic.map((spec) => `-D ${spec}`));
  // -R specs go in the same queue, marked as such (the session reads the option).
  if (Array.isArray(parsed.remote)) specs.push(...parsed.remote.map((spec) => `-R ${spec}`));
  plan.specs = specs;
  if (specs.length === 0) {
    say("no -L forwards in the command");
  } else if (page.state === "connected") {
    plan.addNow = true;
    say(`adding ${forwardsWord(specs.length)}: ${specs.join(", ")}`);
  } else {
    say(`${forwardsWord(specs.length)} queued (${specs.join(", ")}); added right after connecting`);
  }
  return plan;
}
