import assert from "node:assert/strict";
import { test } from "node:test";

import { planPaste } from "../paste_plan.js";

const page = (state, extra = {}) => ({ state, username: "bob", target: "demo", targetNames: ["demo", "lab"], ...extra });

test("disconnected: user and target are filled in, forwards queued for after connecting", () => {
  const plan = planPaste({ user: "alice", host: "lab", forwards: ["1100:mail:110", "0:h:22"], ignored: [] }, page("disconnected"));
  assert.equal(plan.user, "alice");
  assert.equal(plan.target, "lab");
  assert.deepEqual(plan.specs, ["1100:mail:110", "0:h:22"]);
  assert.equal(plan.addNow, false);
  assert.deepEqual(plan.lines, [
    ["user name: alice", "info"],
    ["target: lab", "info"],
    ["2 forwards queued (1100:mail:110, 0:h:22); added right after connecting", "info"],
  ]);
});

test("connected: nothing of the login changes, forwards are added at once", () => {
  const plan = planPaste({ user: "alice", host: "lab", forwards: ["0:h:22"] }, page("connected"));
  assert.equal(plan.user, null);
  assert.equal(plan.target, null);
  assert.equal(plan.addNow, true);
  assert.deepEqual(plan.lines, [
    ["user alice not applied while connected (as bob)", "warn"],
    ["target lab not applied while connected (to demo)", "warn"],
    ["adding 1 forward: 0:h:22", "info"],
  ]);
});

test("the same user and target while connected say nothing", () => {
  const plan = planPaste({ user: "bob", host: "demo", forwards: [] }, page("connected"));
  assert.deepEqual(plan.lines, [["no -L forwards in the command", "info"]]);
});

test("unknown targets, ports and ignored options are warned about", () => {
  const plan = planPaste({ host: "elsewhere", port: 2222, forwards: [], ignored: ["-v", "-C"] }, page("disconnected"));
  assert.equal(plan.target, null);
  assert.deepEqual(plan.lines, [
    ["no target named elsewhere on this relay; pick one", "warn"],
    ["-p 2222: the port is fixed by the relay's target config", "warn"],
    ["ignored: -v -C", "warn"],
    ["no -L forwards in the command", "info"],
  ]);
});

test("while connecting, forwards are queued and the login is left alone", () => {
  const plan = planPaste({ user: "alice", forwards: ["0:h:22"] }, page("connecting"));
  assert.equal(plan.user, null);
  assert.equal(plan.addNow, false);
  assert.deepEqual(plan.lines[1], ["1 forward queued (0:h:22); added right after connecting", "info"]);
});

test("-D forwards are queued as -D specs after the -L ones", () => {
  const plan = planPaste({ host: "lab", forwards: ["0:h:22"], dynamic: ["1080", "127.0.0.1:0"] }, page("disconnected"));
  assert.deepEqual(plan.specs, ["0:h:22", "-D 1080", "-D 127.0.0.1:0"]);
  assert.deepEqual(plan.lines.at(-1), [
    "3 forwards queued (0:h:22, -D 1080, -D 127.0.0.1:0); added right after connecting",
    "info",
  ]);
  const only = planPaste({ host: "lab", forwards: [], dynamic: ["1080"] }, page("connected"));
  assert.equal(only.addNow, true);
  assert.deepEqual(only.specs, ["-D 1080"]);
});

test("-R forwards are queued after the -L ones, marked as remote", () => {
  const plan = planPaste({ host: "demo", forwards: ["0:h:22"], remote: ["0:127.0.0.1:3000"] }, page("disconnected"));
  assert.deepEqual(plan.specs, ["0:h:22", "-R 0:127.0.0.1:3000"]);
  assert.deepEqual(plan.lines.at(-1), [
    "2 forwards queued (0:h:22, -R 0:127.0.0.1:3000); added right after connecting",
    "info",
  ]);
});

test("-L, -D and -R forwards from one line are queued in that order", () => {
  const plan = planPaste(
    { host: "lab", forwards: ["0:h:22"], dynamic: ["1080"], remote: ["0:127.0.0.1:3000"] },
    page("disconnected"),
  );
  assert.deepEqual(plan.specs, ["0:h:22", "-D 1080", "-R 0:127.0.0.1:3000"]);
});
