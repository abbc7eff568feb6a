import assert from "node:assert/strict";
import { test } from "node:test";

import { MAX_LINK_ENTRIES, isLabLink, planLabLink, readLabLink } from "../lab_link.js";
import { blockText, outsideBlock } from "../port_block.js";

/** What the SSH client's parseForwardSpec answers for the specs these tests use. */
function parsedSpecs(link) {
  const parsed = new Map();
  for (const [name, value] of link.entries) {
    if (name !== "L") continue;
    const parts = value.trim().split(":");
    const bind = parts.length === 4 ? parts.shift() : "";
    if (parts.length === 3 && parts.every((p) => p !== "") && /^\d+$/.test(parts[0])) {
      parsed.set(value.trim(), { bind, port: Number(parts[0]), host: parts[1], hostPort: Number(parts[2]) });
    } else {
      parsed.set(value.trim(), { error: "expected [bind:]port:host:hostport" });
    }
  }
  return parsed;
}

const plan = (search, page = {}) => {
  const link = readLabLink(search);
  return planLabLink(link, { targetNames: ["lab", "demo"], block: null, maxForwards: 10, parsed: parsedSpecs(link), ...page });
};

test("a link sets target, user and forwards, and says so in words", () => {
  const p = plan("?target=lab&user=student&L=8080:web:80&L=5432:db:5432");
  assert.equal(p.target, "lab");
  assert.equal(p.user, "student");
  assert.deepEqual(p.specs, ["8080:web:80", "5432:db:5432"]);
  assert.deepEqual(p.problems, []);
  assert.equal(p.summary,
    "This link connects to target lab as student, then opens 2 forwards: port 8080 to web:80; port 5432 to db:5432.");
});

test("a page without a query is no link", () => {
  assert.equal(isLabLink(readLabLink("")), false);
  assert.equal(isLabLink(readLabLink("?user=a")), true);
});

test("secrets are never used, named, and taken out of the address", () => {
  const link = readLabLink("?target=lab&password=hunter2&user=s&Private_Key=abc&token=t0k");
  assert.deepEqual(link.secrets, ["password", "Private_Key", "token"]);
  assert.equal(link.cleanSearch, "?target=lab&user=s");
  const p = planLabLink(link, { targetNames: ["lab"], block: null, maxForwards: 10, parsed: new Map() });
  assert.equal(p.problems.length, 3);
  assert.match(p.problems[0], /^password=…: not used: a link never carries passwords or keys/);
  assert.match(p.problems[2], /^token=…: not used: .*#token=/);
  for (const text of p.problems) assert.ok(!/hunter2|abc|t0k/.test(text), text);
  assert.equal(readLabLink("?password=x").cleanSearch, "");
});

test("bad specs, duplicates and clashing ports are each named with what to do", () => {
  const p = plan("?L=8080:web:80&L=8080:web:80&L=8080:db:5432&L=nonsense&L=");
  assert.deepEqual(p.specs, ["8080:web:80"]);
  assert.deepEqual(p.problems, [
    "L=8080:web:80: appears twice in the link; it is opened once.",
    "L=8080:db:5432: port 8080 is taken by L=8080:web:80 of this link already, so this one is not opened. Add it yourself after connecting, with another port.",
    "L=nonsense: not a forward: expected [bind:]port:host:hostport. Ask for a corrected link, or add the forward yourself after connecting.",
    "L=: empty; a forward reads like 8080:web:80.",
  ]);
  // Port 0 twice is two forwards: each gets a free port.
  assert.deepEqual(plan("?L=0:web:80&L=0:db:5432").specs, ["0:web:80", "0:db:5432"]);
});

test("an unknown target, a second target or user, and unknown entries are named", () => {
  const p = plan("?target=elsewhere&target=lab&user=a&user=b&user2=c&l=1:h:2");
  assert.equal(p.target, "");
  assert.equal(p.user, "a");
  assert.deepEqual(p.problems, [
    "target=elsewhere: this relay has no target of that name; pick one of its targets (lab, demo) in the Target list, or ask for a corrected link.",
    "target=lab: the link names a target already (elsewhere); only the first one is used.",
    "user=b: the link names a user already (a); only the first one is used.",
    "user2=c: not something a link can set (it sets target, user and L, the forwards), so it is not used.",
    "l=1:h:2: not something a link can set (it sets target, user and L, the forwards), so it is not used.",
  ]);
  assert.match(p.summary, /^This link connects to the target you pick as a, then opens no forwards\.$/);
});

test("a user name with spaces or control characters is refused", () => {
  for (const bad of ["a b", "a%0Ab", "%20"]) {
    const p = plan(`?user=${bad}`);
    assert.equal(p.user, "", bad);
    assert.match(p.problems[0], /not a user name; type yours/);
  }
});

test("before the relay's list arrives the target is taken as given", () => {
  const p = plan("?target=lab", { targetNames: null });
  assert.equal(p.target, "lab");
  assert.deepEqual(p.problems, []);
});

test("ports outside the holder's block are named, port 0 always fits", () => {
  const block = { first: 20010, last: 20019 };
  const p = plan("?L=20010:web:80&L=8080:db:5432&L=0:h:22&L=20019:h:23", { block });
  assert.deepEqual(p.specs, ["20010:web:80", "0:h:22", "20019:h:23"]);
  assert.deepEqual(p.problems, [
    "L=8080:db:5432: port 8080 is outside your block 20010-20019 of this relay's forward ports (each token holder has their own); pick a port in it, or 0 for any free one. This one is not opened: ask for a link with your ports, or add it yourself after connecting.",
  ]);
  assert.equal(blockText(block), "20010-20019");
  assert.equal(outsideBlock(20009, block), "port 20009 is outside your block 20010-20019 of this relay's forward ports (each token holder has their own); pick a port in it, or 0 for any free one");
  assert.equal(outsideBlock(20020, block) !== null, true);
  assert.equal(outsideBlock(20015, block), null);
  assert.equal(outsideBlock(0, block), null);
  assert.equal(outsideBlock(8080, null), null);
});

test("forwards past the session's cap are named, not dropped", () => {
  const p = plan("?L=0:a:1&L=0:b:1&L=0:c:1", { maxForwards: 2 });
  assert.deepEqual(p.specs, ["0:a:1", "0:b:1"]);
  assert.deepEqual(p.problems, ["L=0:c:1: not opened: one session on this relay may open at most 2 forwards. Ask for a link with fewer."]);
});

test("a link longer than the page reads says how much was left out", () => {
  const search = `?${Array.from({ length: MAX_LINK_ENTRIES + 3 }, (_, i) => `L=0:h${i}:1`).join("&")}`;
  const p = plan(search, { maxForwards: 100 });
  assert.equal(p.specs.length, MAX_LINK_ENTRIES);
  assert.deepEqual(p.problems, ["3 more entries: a link may have at most 40, so they are not used. Ask for a shorter link."]);
});

test("long values are cut in what the page repeats", () => {
  const p = plan(`?what=${"x".repeat(500)}`);
  assert.ok(p.problems[0].length < 250, p.problems[0]);
  assert.ok(p.problems[0].includes("…"));
});

test("a link opens forwards on the relay host's loopback only", () => {
  const p = plan("?L=127.0.0.1:0:a:1&L=localhost:0:b:1&L=0.0.0.0:0:c:1&L=10.1.2.3:8080:d:1");
  assert.deepEqual(p.specs, ["127.0.0.1:0:a:1", "localhost:0:b:1"]);
  assert.match(p.summary, /any free port on 127\.0\.0\.1 to a:1; any free port on localhost to b:1\.$/);
  assert.deepEqual(p.problems, [
    "L=0.0.0.0:0:c:1: listens on 0.0.0.0, where anyone who can reach the relay host could use your SSH account through it, so a link may not open it. Add it yourself after connecting if you mean it.",
    "L=10.1.2.3:8080:d:1: listens on 10.1.2.3, where anyone who can reach the relay host could use your SSH account through it, so a link may not open it. Add it yourself after connecting if you mean it.",
  ]);
});

test("the summary cuts a long target or user name the link's maker wrote", () => {
  // Before the relay's list arrives, the target is shown unchecked.
  const p = plan(`?target=${"t".repeat(300)}&user=${"u".repeat(250)}`, { targetNames: null });
  assert.ok(p.summary.length < 250, p.summary);
  assert.match(p.summary, /^This link connects to target t{80}… as u{80}…, then opens no forwards\.$/);
});
