// Published chat templates from the npm package @huggingface/ollama-utils (MIT), pinned by
// scripts/setup: its chat-template map pairs each Ollama library model with the Jinja chat
// template its GGUF file carries (the model's tokenizer_config.json chat_template, copied at
// conversion). The map is not exported, so it is read from the package's own build.
//
//   node published_templates.mjs NPM_DIR OUT.json MODEL...
//
// OUT: {"MODEL": "template text", ...}; a MODEL the map does not have is an error.
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";
import vm from "node:vm";

const [npmDir, outPath, ...models] = process.argv.slice(2);
if (!outPath || models.length === 0) {
  console.error("usage: node published_templates.mjs NPM_DIR OUT.json MODEL...");
  process.exit(2);
}
const require = createRequire(path.join(path.resolve(npmDir), "package.json"));
const source = fs.readFileSync(require.resolve("@huggingface/ollama-utils"), "utf8");
const start = "var OLLAMA_CHAT_TEMPLATE_MAPPING = ";
const begin = source.indexOf(start);
const end = source.indexOf("\n];\n", begin);
if (begin < 0 || end < 0) throw new Error("@huggingface/ollama-utils: chat-template map not found in its build");
const map = vm.runInNewContext(source.slice(begin + start.length, end + 3));
const out = {};
for (const model of models) {
  const entry = map.find((e) => e.model === model);
  if (!entry || typeof entry.gguf !== "string") throw new Error(`@huggingface/ollama-utils has no template for ${model}`);
  out[model] = entry.gguf;
}
fs.writeFileSync(outPath, JSON.stringify(out));
