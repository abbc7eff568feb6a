import assert from "node:assert/strict";
import { test } from "node:test";

import { bracketIfV6, reachOf, remoteOf, specFromFields } from "../reach.js";

const open = { publicHost: null, allowedSources: [] };

test("loopback forwards are for programs on the relay host only", () => {
  for (const listen of ["127.0.0.1:20001", "127.5.5.5:20001", "localhost:20001", "[::1]:20001"]) {
    assert.deepEqual(reachOf(listen, open, "relay.example.com"), {
      connect: null,
      sentence: "Only programs on the relay host (any user on it) can use this forward.",
    });
  }
});

test("the relay's allowed sources narrow every sentence, loopback included", () => {
  const relay = { publicHost: null, allowedSources: ["10.0.0.0/8", "192.168.1.0/24"] };
  assert.equal(
    reachOf("127.0.0.1:20001", relay, "r").sentence,
    "Only programs on the relay host (any user on it) can use this forward, from 10.0.0.0/8 or 192.168.1.0/24 only.",
  );
  assert.equal(
    reachOf("10.1.2.3:20001", relay, "r").sentence,
    "Anyone who can reach 10.1.2.3:20001 can use this forward, from 10.0.0.0/8 or 192.168.1.0/24 only.",
  );
});

test("a wildcard bind without public_host names the page's host but warns about every address", () => {
  const reach = reachOf("0.0.0.0:20001", open, "localhost");
  assert.equal(reach.connect, "localhost:20001");
  assert.equal(reach.sentence, "Anyone who can reach any address of the relay host on port 20001 can use this forward.");
  const v6 = reachOf("[::]:20002", open, "[2001:db8::1]");
  assert.equal(v6.connect, "[2001:db8::1]:20002");
});

test("public_host is the address to give, for wildcard and specific binds alike", () => {
  const relay = { publicHost: "relay.example.com", allowedSources: [] };
  for (const listen of ["0.0.0.0:20001", "192.0.2.7:20001"]) {
    const reach = reachOf(listen, relay, "localhost");
    assert.equal(reach.connect, "relay.example.com:20001");
    assert.equal(reach.sentence, "Anyone who can reach relay.example.com:20001 can use this forward.");
  }
  const v6 = reachOf("0.0.0.0:20001", { publicHost: "2001:db8::7", allowedSources: [] }, "x");
  assert.equal(v6.connect, "[2001:db8::7]:20001");
});

test("a specific non-loopback bind is reached at that address", () => {
  const reach = reachOf("192.0.2.7:20001", open, "localhost");
  assert.equal(reach.connect, "192.0.2.7:20001");
  assert.equal(reach.sentence, "Anyone who can reach 192.0.2.7:20001 can use this forward.");
});

test("the fields make a spec, IPv6 addresses in brackets", () => {
  assert.equal(specFromFields({ bind: "", port: "", host: "", hostport: "" }), "");
  assert.equal(specFromFields({ bind: "", port: "10080", host: "mail.example.com", hostport: "110" }), "10080:mail.example.com:110");
  assert.equal(specFromFields({ bind: "::", port: "0", host: "2001:db8::5", hostport: "22" }), "[::]:0:[2001:db8::5]:22");
  assert.equal(specFromFields({ bind: "", port: "", host: "h", hostport: "" }), ":h:");
  assert.equal(bracketIfV6("[::1]"), "[::1]");
  assert.equal(bracketIfV6("example.com"), "example.com");
});

test("a remote forward's row says where the SSH server listens and where the relay connects", () => {
  assert.deepEqual(remoteOf("-R 0:127.0.0.1:3000", "localhost:41234"), {
    listen: "localhost:41234",
    destination: "127.0.0.1:3000",
    sentence: "Programs on the SSH server reach 127.0.0.1:3000 through the relay host.",
  });
  assert.equal(
    remoteOf("-R *:8080:[::1]:3000", "*:8080").sentence,
    "Anyone who can reach the SSH server on port 8080 (if its GatewayPorts allows it) reach [::1]:3000 through the relay host.",
  );
  assert.equal(remoteOf("-R10.0.0.1:80:db:5432", "10.0.0.1:80").destination, "db:5432");
  assert.equal(remoteOf("0:127.0.0.1:3000", "127.0.0.1:20001"), null);
  assert.equal(remoteOf("-D 1080", "127.0.0.1:1080"), null);
});
