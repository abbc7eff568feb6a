// A lab link: what `/?target=lab&user=student&L=8080:web:80` asks the page to set up, and
// everything wrong with it, each entry either used or named with what to do.
// No DOM here: tested by web/test/lab_link.test.js.

import { outsideBlock } from "./port_block.js";
import { forwardsWord } from "./text.js";

/** Entries of a link the page reads; more are named as not used. */
export const MAX_LINK_ENTRIES = 40;
/** Longest piece of an entry repeated on the page. */
const SHOWN_CHARS = 80;

/**
 * Names of secrets, compared in lower case without `-` and `_`. A link ends up in chat
 * logs, mail, browser history and (its query) the relay's and proxies' logs: it must
 * never carry one, and the page never uses one it finds.
 */
const SECRET_NAMES = new Set([
  "password", "passwd", "pass", "pw", "pwd", "passphrase", "key", "privatekey", "identity",
  "identityfile", "i", "secret", "token", "accesstoken", "otp",
]);

const isSecret = (name) => SECRET_NAMES.has(name.toLowerCase().replace(/[-_]/g, ""));

const clip = (text) => (text.length > SHOWN_CHARS ? `${text.slice(0, SHOWN_CHARS)}…` : text);

/**
 * The entries of a link's query (`location.search`): { entries: [[name, value]] (at most
 * MAX_LINK_ENTRIES), extra (how many more there were), secrets (names of secret entries),
 * cleanSearch (the query without its secret entries, "" when none is left) }.
 */
export function readLabLink(search) {
  const all = Array.from(new URLSearchParams(search));
  const kept = all.filter(([name]) => !isSecret(name));
  const clean = new URLSearchParams(kept).toString();
  return {
    entries: all.slice(0, MAX_LINK_ENTRIES),
    extra: Math.max(0, all.length - MAX_LINK_ENTRIES),
    secrets: all.filter(([name]) => isSecret(name)).map(([name]) => name),
    cleanSearch: clean ? `?${clean}` : "",
  };
}

/**
 * Whether a forward's bind address keeps it to the relay host: a link may open only those,
 * since a forward on another address lends the user's SSH account to whoever reaches it.
 */
function isLoopbackBind(bind) {
  const b = String(bind ?? "").replace(/^\[|\]$/g, "").toLowerCase();
  return b === "" || b === "localhost" || b === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(b);
}

/** Whether the link asks for anything at all. */
export function isLabLink(link) {
  return link.entries.length > 0;
}

/** "port 8080 to web:80", "any free port on 0.0.0.0 to db:5432". */
export function describeForward(parsed) {
  const port = parsed.port === 0 ? "any free port" : `port ${parsed.port}`;
  const bind = parsed.bind ? ` on ${parsed.bind}` : "";
  return `${port}${bind} to ${parsed.host}:${parsed.hostPort}`;
}

/**
 * What to do with `link` (from readLabLink), given what the page knows: `page` is
 * { targetNames (null until the relay's list arrived), block ({ first, last } or null),
 * maxForwards (per session, or null), parsed (Map: spec -> the SSH client's
 * parseForwardSpec answer, or { error }) }.
 * Returns { target, user (null: not set by the link), specs (forwards to open, in
 * order), problems (texts, each naming the entry, what is wrong and what to do), summary }.
 */
export function planLabLink(link, page) {
  const plan = { target: null, user: null, specs: [], problems: [], summary: "" };
  const problem = (name, value, text) => plan.problems.push(`${clip(name)}=${clip(value)}: ${text}`);
  const described = [];
  const ports = new Map();
  /** The first target and user the link names, as written. */
  const first = { target: null, user: null };

  for (const [name, value] of link.entries) {
    if (isSecret(name)) {
      const text = name.toLowerCase() === "token"
        ? "not used: a token in this part of a link reaches the relay and its logs. Use a link with #token=… at its end (that part never leaves your browser); tell whoever made the link."
        : "not used: a link never carries passwords or keys (links end up in chats, mail and browser history). Type yours below, and tell whoever made the link to remove it.";
      plan.problems.push(`${clip(name)}=…: ${text}`);
    } else if (name === "target") {
      if (first.target !== null) {
        problem(name, value, `the link names a target already (${clip(first.target)}); only the first one is used.`);
        continue;
      }
      first.target = value;
      if (value === "") {
        problem(name, value, "empty; pick a target in the Target list.");
      } else if (page.targetNames && !page.targetNames.includes(value)) {
        const offered = page.targetNames.length > 0 ? `pick one of its targets (${page.targetNames.join(", ")}) in the Target list` : "it has none";
        problem(name, value, `this relay has no target of that name; ${offered}, or ask for a corrected link.`);
        plan.target = "";
      } else {
        plan.target = value;
      }
    } else if (name === "user") {
      if (first.user !== null) {
        problem(name, value, `the link names a user already (${clip(first.user)}); only the first one is used.`);
        continue;
      }
      first.user = value;
      if (value.trim() === "" || /[\s\u0000-\u001f\u007f]/.test(value.trim()) || value.length > 256) {
        problem(name, value, "not a user name; type yours in the User name field.");
        plan.user = "";
      } else {
        plan.user = value.trim();
      }
    } else if (name === "L") {
      const spec = value.trim();
      const parsed = page.parsed.get(spec);
      if (spec === "") {
        problem(name, value, "empty; a forward reads like 8080:web:80.");
      } else if (!parsed || parsed.error) {
        problem(name, value, `not a forward: ${parsed ? parsed.error : "it could not be read"}. Ask for a corrected link, or add the forward yourself after connecting.`);
      } else if (!isLoopbackBind(parsed.bind)) {
        problem(name, value, `listens on ${parsed.bind}, where anyone who can reach the relay host could use your SSH account through it, so a link may not open it. Add it yourself after connecting if you mean it.`);
      } else if (plan.specs.includes(spec)) {
        problem(name, value, "appears twice in the link; it is opened once.");
      } else if (parsed.port !== 0 && ports.has(parsed.port)) {
        problem(name, value, `port ${parsed.port} is taken by L=${ports.get(parsed.port)} of this link already, so this one is not opened. Add it yourself after connecting, with another port.`);
      } else if (outsideBlock(parsed.port, page.block)) {
        problem(name, value, `${outsideBlock(parsed.port, page.block)}. This one is not opened: ask for a link with your ports, or add it yourself after connecting.`);
      } else if (page.maxForwards && plan.specs.length >= page.maxForwards) {
        problem(name, value, `not opened: one session on this relay may open at most ${forwardsWord(page.maxForwards)}. Ask for a link with fewer.`);
      } else {
        plan.specs.push(spec);
        described.push(describeForward(parsed));
        if (parsed.port !== 0) ports.set(parsed.port, spec);
      }
    } else {
      problem(name, value, "not something a link can set (it sets target, user and L, the forwards), so it is not used.");
    }
  }
  if (link.extra > 0) {
    plan.problems.push(`${link.extra} more ${link.extra === 1 ? "entry" : "entries"}: a link may have at most ${MAX_LINK_ENTRIES}, so ${link.extra === 1 ? "it is" : "they are"} not used. Ask for a shorter link.`);
  }

  // Clipped: until the relay's list of targets arrives, a link's target is shown unchecked,
  // and the page must not say at length what a link's maker wrote.
  const whereTo = plan.target ? `target ${clip(plan.target)}` : "the target you pick";
  const asWhom = plan.user ? clip(plan.user) : "the user name you type in";
  const what = plan.specs.length === 0
    ? "opens no forwards"
    : `opens ${forwardsWord(plan.specs.length)}: ${described.join("; ")}`;
  plan.summary = `This link connects to ${whereTo} as ${asWhom}, then ${what}.`;
  return plan;
}
