import assert from "node:assert/strict";
import { test } from "node:test";

import { parseTargetsAnswer, tokenFromFragment } from "../relay_info.js";

test("targets are names or { name } objects; empty and odd entries are left out", () => {
  const info = parseTargetsAnswer({ targets: ["a", { name: "b" }, "", { name: 3 }, null, 7] });
  assert.deepEqual(info.names, ["a", "b"]);
  assert.equal(info.tokenRequired, false);
  assert.equal(info.publicHost, null);
  assert.deepEqual(info.allowedSources, []);
});

test("token, public host and allowed sources are read only when well-formed", () => {
  const info = parseTargetsAnswer({
    targets: [],
    token_required: true,
    public_host: "relay.example.com",
    forward_allowed_sources: ["10.0.0.0/8", 5],
  });
  assert.equal(info.tokenRequired, true);
  assert.equal(info.publicHost, "relay.example.com");
  assert.deepEqual(info.allowedSources, ["10.0.0.0/8"]);
  const odd = parseTargetsAnswer({ targets: [], token_required: "yes", public_host: "", forward_allowed_sources: "x" });
  assert.equal(odd.tokenRequired, false);
  assert.equal(odd.publicHost, null);
  assert.deepEqual(odd.allowedSources, []);
});

test("a token holder's name and block of ports are read when well-formed", () => {
  const info = parseTargetsAnswer({
    targets: [],
    forwards_per_session: 10,
    token_holder: "alice",
    port_block: { first: 20000, last: 20009 },
  });
  assert.equal(info.maxForwards, 10);
  assert.equal(info.tokenHolder, "alice");
  assert.deepEqual(info.portBlock, { first: 20000, last: 20009 });
  assert.equal(info.tokenError, null);
  for (const block of [null, { first: 20010, last: 20009 }, { first: 0, last: 2 }, { first: "1", last: 2 }, { first: 1, last: 70000 }]) {
    assert.equal(parseTargetsAnswer({ targets: [], port_block: block }).portBlock, null, JSON.stringify(block));
  }
  const refused = parseTargetsAnswer({ targets: [], token_error: "not valid here", forwards_per_session: -1 });
  assert.equal(refused.tokenError, "not valid here");
  assert.equal(refused.tokenHolder, null);
  assert.equal(refused.maxForwards, null);
});

test("an answer without a target list is refused", () => {
  for (const body of [null, {}, { targets: "a" }]) {
    assert.throws(() => parseTargetsAnswer(body), /the relay's answer has no target list/);
  }
});

test("the token comes from the fragment, decoded; a damaged one is reported, not used", () => {
  assert.equal(tokenFromFragment(""), null);
  assert.equal(tokenFromFragment("#other=1"), null);
  assert.deepEqual(tokenFromFragment("#token=abc"), { token: "abc" });
  assert.deepEqual(tokenFromFragment("#x=1&token=a%20b&y=2"), { token: "a b" });
  assert.deepEqual(tokenFromFragment("#token=ab%zz"), { damaged: true });
  assert.deepEqual(tokenFromFragment("#token="), { damaged: true });
  assert.equal(tokenFromFragment("#mytoken=abc"), null);
});
