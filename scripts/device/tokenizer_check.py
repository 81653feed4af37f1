#!/usr/bin/env python3
"""Device check of Nibble's tokenizers against the Python `tokenizers` and `transformers` libraries
(the Hugging Face reference implementations; the CI oracle is the Node.js port).

Inputs (prepared on the build machine by scripts/device/tokenizer_check_prepare.sh, carried in
.devsrc-tokenizer/tokcheck): for each bundled tokenizer NAME, models/NAME/tokenizer.json.gz +
tokenizer_config.json, ours/NAME.ids.gz (Nibble's ids for every corpus case, one JSON list per
line), ours/NAME.chat.gz (Nibble's chat-prompt ids per conversation, "null" where it refused);
corpus/*.txt and chat/conversations.json.

    python3 tokenizer_check.py DIR OUT_DIR

Writes OUT_DIR/tokenizer_check.json and prints a summary; exit status 1 on any difference.
"""
import gzip
import json
import os
import sys
import tempfile
import time


def corpus_cases(corpus_dir):
    # The same cases, in the same order, as tests/tokenizer/oracle_support.cpp load_corpus().
    cases = []
    for name in sorted(f for f in os.listdir(corpus_dir) if f.endswith(".txt")):
        text = open(os.path.join(corpus_dir, name), encoding="utf-8", newline="").read()
        for i, part in enumerate(text.split("\n%%%%\n")):
            cases.append((f"{name}:{i}", part))
        cases.append((f"{name}:whole", text))
    return cases


def main():
    root, out_dir = sys.argv[1], sys.argv[2]
    import tokenizers
    import transformers
    report = {"tokenizers_version": tokenizers.__version__, "transformers_version": transformers.__version__, "results": {}}
    cases = corpus_cases(os.path.join(root, "corpus"))
    conversations = json.load(open(os.path.join(root, "chat", "conversations.json"), encoding="utf-8"))
    failed = False
    for name in sorted(os.listdir(os.path.join(root, "models"))):
        mdir = os.path.join(root, "models", name)
        tok_json = gzip.open(os.path.join(mdir, "tokenizer.json.gz"), "rt", encoding="utf-8").read()
        ours = [json.loads(l) for l in gzip.open(os.path.join(root, "ours", f"{name}.ids.gz"), "rt")]
        res = {"cases": len(cases), "id_mismatches": [], "hf_tokenizers_encode_s": None}
        # 1. tokenizers (Rust) on the raw tokenizer.json; transformers for the config's BOS/EOS rules.
        with tempfile.TemporaryDirectory() as tmp:
            open(os.path.join(tmp, "tokenizer.json"), "w", encoding="utf-8").write(tok_json)
            cfg = json.load(open(os.path.join(mdir, "tokenizer_config.json"), encoding="utf-8"))
            json.dump(cfg, open(os.path.join(tmp, "tokenizer_config.json"), "w"))
            fast = transformers.AutoTokenizer.from_pretrained(tmp)
        raw = tokenizers.Tokenizer.from_str(tok_json)
        t0 = time.perf_counter()
        ids_raw = [e.ids for e in raw.encode_batch([c[1] for c in cases], add_special_tokens=True)]
        res["hf_tokenizers_encode_s"] = time.perf_counter() - t0
        for (case, text), mine, theirs_raw in zip(cases, ours, ids_raw):
            theirs = fast(text, add_special_tokens=True)["input_ids"]
            if mine != theirs:
                k = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), min(len(mine), len(theirs)))
                res["id_mismatches"].append({"case": case, "at": k, "ours": mine[k:k + 8], "transformers": theirs[k:k + 8],
                                             "tokenizers_raw_equal": mine == theirs_raw})
        # 2. chat templates (the tokenizer's own) through transformers' apply_chat_template.
        chat_path = os.path.join(root, "ours", f"{name}.chat.gz")
        if os.path.exists(chat_path) and fast.chat_template:
            ours_chat = [json.loads(l) for l in gzip.open(chat_path, "rt")]
            res["chat"] = {"conversations": len(conversations), "mismatches": []}
            for conv, mine in zip(conversations, ours_chat):
                try:
                    theirs = fast.apply_chat_template(conv["messages"], tools=conv.get("tools"), tokenize=True,
                                                      add_generation_prompt=conv.get("add_generation_prompt", True),
                                                      return_dict=False, **conv.get("kwargs", {}))
                    if hasattr(theirs, "tolist"):
                        theirs = theirs.tolist()
                    if isinstance(theirs, dict):
                        theirs = theirs["input_ids"]
                except Exception as e:  # the template refused
                    theirs = None
                if mine != theirs:
                    res["chat"]["mismatches"].append({"name": conv["name"], "ours": None if mine is None else len(mine),
                                                      "transformers": None if theirs is None else len(theirs)})
            failed |= bool(res["chat"]["mismatches"])
        failed |= bool(res["id_mismatches"])
        res["id_mismatches"] = res["id_mismatches"][:20]
        report["results"][name] = res
        print(f"{name}: {len(cases)} cases, id mismatches {len(res['id_mismatches'])}, "
              f"chat mismatches {len(res.get('chat', {}).get('mismatches', [])) if 'chat' in res else 'n/a'}", flush=True)
    os.makedirs(out_dir, exist_ok=True)
    json.dump(report, open(os.path.join(out_dir, "tokenizer_check.json"), "w"), indent=1)
    print("ALL EQUAL" if not failed else "DIFFERENCES FOUND")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
