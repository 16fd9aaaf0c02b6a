// Validate CI YAML files against GitLab's CI schema (../shared/gitlab/ci.schema.json).
//   node validate.mjs FILE...
// A file with a `spec:` header is two documents: the header is validated on its
// own, then the body is validated with every $[[ inputs.x ]] interpolated from
// the input's default (typed: numbers and booleans stay unquoted), as GitLab
// does before it reads the body. Prints one line per document; exit 1 if any fails.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import Ajv from "ajv";
import YAML from "yaml";

const here = path.dirname(fileURLToPath(import.meta.url));
const schemaPath = process.env.FACTORY_CI_SCHEMA || path.resolve(here, "../../../shared/gitlab/ci.schema.json");
const schema = JSON.parse(fs.readFileSync(schemaPath, "utf8"));
const ajv = new Ajv({ allErrors: true, strict: false, validateFormats: false });
const validate = ajv.compile(schema);

// GitLab interpolates the parsed YAML, keys and string values alike; a value
// that is one interpolation block and nothing else takes the input's type.
const BLOCK = /\$\[\[\s*inputs\.([A-Za-z0-9_-]+)\s*\]\]/g;
const WHOLE = /^\$\[\[\s*inputs\.([A-Za-z0-9_-]+)\s*\]\]$/;

function valueOf(name, inputs, overrides) {
  if (!(name in inputs)) throw new Error(`unknown input ${name}`);
  const v = name in overrides ? overrides[name] : inputs[name].default;
  if (v === undefined) throw new Error(`input ${name} has no default`);
  return v;
}

function interpolate(node, inputs, overrides) {
  if (typeof node === "string") {
    const m = node.match(WHOLE);
    if (m) return valueOf(m[1], inputs, overrides);
    return node.replace(BLOCK, (_, name) => String(valueOf(name, inputs, overrides)));
  }
  if (Array.isArray(node)) return node.map((x) => interpolate(x, inputs, overrides));
  if (node && typeof node === "object") {
    const out = {};
    for (const [k, v] of Object.entries(node)) out[interpolate(k, inputs, overrides)] = interpolate(v, inputs, overrides);
    return out;
  }
  return node;
}

function check(label, doc) {
  const ok = validate(doc);
  if (ok) {
    console.log(`ok    ${label}`);
    return true;
  }
  console.log(`FAIL  ${label}`);
  for (const e of validate.errors.slice(0, 20)) console.log(`      ${e.instancePath || "/"} ${e.message} ${JSON.stringify(e.params)}`);
  return false;
}

let failed = 0;
for (const file of process.argv.slice(2)) {
  const text = fs.readFileSync(file, "utf8");
  const docs = YAML.parseAllDocuments(text);
  for (const d of docs) {
    if (d.errors.length) {
      console.log(`FAIL  ${file}: YAML: ${d.errors[0].message}`);
      failed++;
    }
  }
  if (docs.length === 2) {
    const header = docs[0].toJS();
    if (!check(`${file} (header)`, header)) failed++;
    const inputs = (header.spec && header.spec.inputs) || {};
    for (const [name, spec] of Object.entries(inputs)) {
      if (spec.type === undefined) {
        console.log(`FAIL  ${file}: input ${name} has no type (write type: string)`);
        failed++;
      }
    }
    const body = docs[1].toJS();
    const bodyDoc = interpolate(body, inputs, {});
    if (!check(`${file} (body, defaults)`, bodyDoc)) failed++;
    // Every option of every input with options, one at a time.
    for (const [name, spec] of Object.entries(inputs)) {
      for (const opt of spec.options || []) {
        const doc = interpolate(body, inputs, { [name]: opt });
        if (!validate(doc)) {
          check(`${file} (body, ${name}=${opt})`, doc);
          failed++;
        }
      }
    }
  } else if (docs.length === 1) {
    if (!check(file, docs[0].toJS())) failed++;
  } else {
    console.log(`FAIL  ${file}: expected one document, or a spec header and a body`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
