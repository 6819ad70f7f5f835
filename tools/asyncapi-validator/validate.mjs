// Usage: node validate.mjs FILE [FILE...]   -> exit 1 if any error-severity diagnostic
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const { Parser, DiagnosticSeverity } = require('@asyncapi/parser');

const SEV = ['error', 'warning', 'info', 'hint'];
const parser = new Parser();
let failed = false;
for (const file of process.argv.slice(2)) {
  const text = await readFile(file, 'utf8');
  const { document, diagnostics } = await parser.parse(text, { source: file });
  const errors = diagnostics.filter(d => d.severity === DiagnosticSeverity.Error);
  for (const d of diagnostics) {
    const line = d.range ? d.range.start.line + 1 : '?';
    console.log(`${file}:${line} ${SEV[d.severity]} ${d.code}: ${d.message} at /${(d.path || []).join('/')}`);
  }
  if (!document || errors.length) { failed = true; console.log(`${file}: INVALID (${errors.length} errors)`); }
  else console.log(`${file}: valid (AsyncAPI ${document.version()})`);
}
process.exit(failed ? 1 : 0);
