// The page's shape: no module over about 300 lines, no import circles, and the DOM-free
// modules really free of the DOM (they run here, in node, where there is none).
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { test } from "node:test";

const dir = new URL("../", import.meta.url);
const modules = readdirSync(dir).filter((f) => f.endsWith(".js"));
const source = (name) => readFileSync(new URL(name, dir), "utf8");
const importsOf = (name) => Array.from(source(name).matchAll(/^import .* from "\.\/([\w.]+)";$/gm), (m) => m[1]);

test("the page is split into modules of at most 300 lines", () => {
  assert.ok(modules.includes("main.js"));
  for (const name of modules) {
    const lines = source(name).split("\n").length;
    assert.ok(lines <= 300, `${name} has ${lines} lines`);
  }
});

test("no module imports one that imports it", () => {
  const visiting = new Set();
  const done = new Set();
  const visit = (name, path) => {
    assert.ok(!visiting.has(name), `import circle: ${[...path, name].join(" -> ")}`);
    if (done.has(name)) return;
    visiting.add(name);
    for (const next of importsOf(name)) {
      assert.ok(modules.includes(next), `${name} imports ${next}, which is not in web/`);
      visit(next, [...path, name]);
    }
    visiting.delete(name);
    done.add(name);
  };
  for (const name of modules) visit(name, []);
});

test("the DOM-free modules load without a DOM", async () => {
  assert.equal(typeof globalThis.document, "undefined");
  for (const name of ["reach.js", "relay_info.js", "paste_plan.js", "lab_link.js", "port_block.js", "text.js", "worker_protocol.js", "wasm_support.js"]) {
    assert.match(source(name), /No DOM here/, name);
    await import(new URL(name, dir).href);
  }
});
