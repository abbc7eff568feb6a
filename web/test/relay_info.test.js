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
