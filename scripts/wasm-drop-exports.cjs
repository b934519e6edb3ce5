// Drops the exports of a wasm module that its wasm-bindgen glue never reads,
// so that wasm-opt can remove the code only they reach.
//
// Usage: node scripts/wasm-drop-exports.cjs <module.wasm> <glue.js>
//
// Why: a cdylib exports every #[no_mangle] function of its dependencies.
// sqlite-wasm-rs and zstd-sys export their C runtime shims (malloc, qsort,
// localtime...) that way, for the C code linked into the same module, which
// calls them directly. Exported, they stay, with what they reach: qsort
// alone brings five copies of Rust's sort (about 20 KB).
'use strict';
const fs = require('fs');

const [file, glue] = process.argv.slice(2);
if (!file || !glue) {
  console.error('usage: wasm-drop-exports.cjs <module.wasm> <glue.js>');
  process.exit(2);
}
const bytes = fs.readFileSync(file);
const read = new Set([...fs.readFileSync(glue, 'utf8').matchAll(/wasm\.([A-Za-z_$][\w$]*)/g)].map((m) => m[1]));

function uleb(at) {
  let value = 0;
  let shift = 0;
  let byte;
  do {
    byte = bytes[at++];
    value += (byte & 0x7f) * 2 ** shift;
    shift += 7;
  } while (byte & 0x80);
  return [value, at];
}

function encodeUleb(value) {
  const out = [];
  do {
    let byte = value % 128;
    value = Math.floor(value / 128);
    if (value) byte |= 0x80;
    out.push(byte);
  } while (value);
  return Buffer.from(out);
}

const EXPORT_SECTION = 7;
const parts = [bytes.subarray(0, 8)];
const dropped = [];
let at = 8;
while (at < bytes.length) {
  const id = bytes[at];
  const [size, bodyAt] = uleb(at + 1);
  const end = bodyAt + size;
  if (id !== EXPORT_SECTION) {
    parts.push(bytes.subarray(at, end));
    at = end;
    continue;
  }
  let [count, p] = uleb(bodyAt);
  const kept = [];
  for (let i = 0; i < count; i++) {
    const start = p;
    const [length, nameAt] = uleb(p);
    const name = bytes.subarray(nameAt, nameAt + length).toString();
    [, p] = uleb(nameAt + length + 1); // after the kind byte: the index
    if (read.has(name)) kept.push(bytes.subarray(start, p));
    else dropped.push(name);
  }
  const body = Buffer.concat([encodeUleb(kept.length), ...kept]);
  parts.push(Buffer.from([EXPORT_SECTION]), encodeUleb(body.length), body);
  at = end;
}
if (!read.has('memory') || !read.has('__wbindgen_start')) {
  console.error(`${glue} does not look like wasm-bindgen glue (no wasm.memory or wasm.__wbindgen_start)`);
  process.exit(1);
}
fs.writeFileSync(file, Buffer.concat(parts));
console.error(`wasm-drop-exports: dropped ${dropped.length} exports the glue never reads: ${dropped.join(' ')}`);
