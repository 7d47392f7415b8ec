// Removes the `name` custom section from a WebAssembly module, in place.
//
// worker-build runs wasm-opt with --debuginfo, which keeps function names:
// about 1.4 MB of the Worker's upload that nothing reads at run time. This
// runs wherever wrangler does (Node), so the deploy build needs no other
// tool. Usage: node scripts/strip-wasm-names.mjs <file.wasm>
import { readFileSync, writeFileSync } from "node:fs";

const path = process.argv[2];
if (!path) {
  console.error("usage: strip-wasm-names.mjs <file.wasm>");
  process.exit(2);
}
const bytes = readFileSync(path);
if (bytes.length < 8 || bytes.readUInt32LE(0) !== 0x6d736100) {
  console.error(`${path}: not a WebAssembly module`);
  process.exit(1);
}

// An unsigned LEB128 at `at`: [value, next offset].
function leb(at) {
  let value = 0;
  let shift = 0;
  for (;;) {
    if (at >= bytes.length) throw new Error("truncated LEB128");
    const b = bytes[at++];
    value += (b & 0x7f) * 2 ** shift;
    if ((b & 0x80) === 0) return [value, at];
    shift += 7;
    if (shift > 35) throw new Error("LEB128 too long");
  }
}

const kept = [bytes.subarray(0, 8)];
let removed = 0;
for (let at = 8; at < bytes.length; ) {
  const start = at;
  const id = bytes[at];
  const [size, payload] = leb(at + 1);
  const end = payload + size;
  if (end > bytes.length) throw new Error("section runs past the end");
  let isName = false;
  if (id === 0) {
    const [len, name] = leb(payload);
    isName = bytes.subarray(name, name + len).toString("utf8") === "name";
  }
  if (isName) removed += end - start;
  else kept.push(bytes.subarray(start, end));
  at = end;
}
writeFileSync(path, Buffer.concat(kept));
console.error(`${path}: removed ${removed} bytes of names`);
