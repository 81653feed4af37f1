#!/usr/bin/env python3
"""Device check of Nibble's tokenizers against the Python `tokenizers` and `transformers` libraries
(the Hugging Face reference implementations; the CI oracle is the Node.js port).

Inputs (written by scripts/device/tokenizer_check_prepare.sh, default build/tokenizer-check): for
each bundled tokenizer NAME, models/NAME/tokenizer.json.gz + tokenizer_config.json; Nibble's
answers in ours/: NAME.ids.gz (ids of every corpus case, one JSON list per line),
NAME.decoded.gz / NAME.decoded_skip.gz (their decode, one JSON string per line), NAME.chat.gz
(chat-prompt ids per conversation, "null" where Nibble refused), gptoss.harmony.gz (harmony
prompt ids per harmony case); corpus/*.txt and chat/*.json.

    python3 scripts/device/tokenizer_check.py DIR OUT_DIR

What decides pass or fail (exit status 1 on any difference):
  ids     Nibble's ids == the `tokenizers` library's on the raw tokenizer.json (add_special_tokens)
  decode  Nibble's decode == `tokenizers` decode of the same ids (skip_special_tokens false and
          true), with transformers' clean_up_tokenization_spaces applied when the config asks
  chat    Nibble's chat-prompt ids == transformers' apply_chat_template(tokenize=True), for the
          tokenizers whose config has a template
  harmony Nibble's built-in harmony prompts (gpt-oss) == `tokenizers` encode of the published
          template's text (chat/harmony_expected.json), and decode back to it; refused where the
          template raises
Reported apart, not gating: transformers' own ids (AutoTokenizer) where they differ from the
`tokenizers` library, with the known reasons in KNOWN_TRANSFORMERS_DIFFERENCES.

Writes OUT_DIR/tokenizer_check.json; prints one line per tokenizer with the true mismatch counts
(the JSON keeps the first 20 of each list).
"""
import gzip
import json
import os
import sys
import tempfile
import time

LIST_LIMIT = 20

# Tokenizers whose transformers class is known not to run the tokenizer.json pipeline as it is.
KNOWN_TRANSFORMERS_DIFFERENCES = {
    "llama2": "transformers' Llama tokenizer class handles a leading space itself (legacy / prefix-space "
              "rules) where the tokenizer.json pipeline gives '▁▁' + 'x' for ' x'; Nibble, the tokenizers "
              "library and transformers.js follow tokenizer.json",
}


def corpus_cases(corpus_dir):
    # The same cases, in the same order, as tests/tokenizer/oracle_support.cpp load_corpus().
    cases = []
    for name in sorted(f for f in os.listdir(corpus_dir) if f.endswith(".txt")):
        text = open(os.path.join(corpus_dir, name), encoding="utf-8", newline="").read()
        for i, part in enumerate(text.split("\n%%%%\n")):
            cases.append((f"{name}:{i}", part))
        cases.append((f"{name}:whole", text))
    return cases


def json_lines(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def clean_up_tokenization(text):
    # transformers' clean_up_tokenization_spaces: spaces before punctuation and contractions.
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text


def first_difference(a, b):
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def check_tokenizer(root, name, cases, conversations, transformers, tokenizers):
    mdir = os.path.join(root, "models", name)
    tok_json = gzip.open(os.path.join(mdir, "tokenizer.json.gz"), "rt", encoding="utf-8").read()
    cfg = json.load(open(os.path.join(mdir, "tokenizer_config.json"), encoding="utf-8"))
    ours = json_lines(os.path.join(root, "ours", f"{name}.ids.gz"))
    ours_decoded = {False: json_lines(os.path.join(root, "ours", f"{name}.decoded.gz")),
                    True: json_lines(os.path.join(root, "ours", f"{name}.decoded_skip.gz"))}
    assert len(ours) == len(cases), f"{name}: {len(ours)} id lines for {len(cases)} cases"
    with tempfile.TemporaryDirectory() as tmp:
        open(os.path.join(tmp, "tokenizer.json"), "w", encoding="utf-8").write(tok_json)
        json.dump(cfg, open(os.path.join(tmp, "tokenizer_config.json"), "w"))
        fast = transformers.AutoTokenizer.from_pretrained(tmp)
    raw = tokenizers.Tokenizer.from_str(tok_json)
    clean_up = cfg.get("clean_up_tokenization_spaces", True)
    res = {"cases": len(cases)}

    # ids and decode against the tokenizers library (gating).
    t0 = time.perf_counter()
    theirs_ids = [e.ids for e in raw.encode_batch([c[1] for c in cases], add_special_tokens=True)]
    res["tokenizers_encode_s"] = time.perf_counter() - t0
    id_mismatches, decode_mismatches = [], []
    for (case, text), mine, theirs in zip(cases, ours, theirs_ids):
        if mine != theirs:
            k = first_difference(mine, theirs)
            id_mismatches.append({"case": case, "at": k, "ours": mine[k:k + 8], "tokenizers": theirs[k:k + 8]})
    for skip in (False, True):
        for (case, _), mine_ids, mine_text in zip(cases, ours, ours_decoded[skip]):
            theirs = raw.decode(mine_ids, skip_special_tokens=skip)
            if clean_up:
                theirs = clean_up_tokenization(theirs)
            if mine_text != theirs:
                k = first_difference(mine_text, theirs)
                decode_mismatches.append({"case": case, "skip_special_tokens": skip, "at": k,
                                          "ours": mine_text[max(0, k - 20):k + 40], "tokenizers": theirs[max(0, k - 20):k + 40]})

    # transformers' own ids (reported, not gating).
    transformers_mismatches = []
    for (case, text), theirs_raw in zip(cases, theirs_ids):
        theirs = fast(text, add_special_tokens=True)["input_ids"]
        if theirs != theirs_raw:
            k = first_difference(theirs, theirs_raw)
            transformers_mismatches.append({"case": case, "at": k, "transformers": theirs[k:k + 8],
                                            "tokenizers": theirs_raw[k:k + 8]})

    # chat templates (the tokenizer's own) through transformers' apply_chat_template (gating).
    chat_mismatches = None
    chat_path = os.path.join(root, "ours", f"{name}.chat.gz")
    if os.path.exists(chat_path) and fast.chat_template:
        chat_mismatches = []
        for conv, mine in zip(conversations, json_lines(chat_path)):
            try:
                theirs = fast.apply_chat_template(conv["messages"], tools=conv.get("tools"), tokenize=True,
                                                  add_generation_prompt=conv.get("add_generation_prompt", True),
                                                  return_dict=False, **conv.get("kwargs", {}))
                if hasattr(theirs, "tolist"):
                    theirs = theirs.tolist()
                if isinstance(theirs, dict):
                    theirs = theirs["input_ids"]
            except Exception:  # the template refused
                theirs = None
            if mine != theirs:
                chat_mismatches.append({"name": conv["name"], "ours": None if mine is None else len(mine),
                                        "transformers": None if theirs is None else len(theirs)})

    res["counts"] = {"id_mismatches": len(id_mismatches), "decode_mismatches": len(decode_mismatches),
                     "chat_mismatches": None if chat_mismatches is None else len(chat_mismatches),
                     "transformers_id_differences": len(transformers_mismatches)}
    res["id_mismatches"] = id_mismatches[:LIST_LIMIT]
    res["decode_mismatches"] = decode_mismatches[:LIST_LIMIT]
    res["chat_mismatches"] = None if chat_mismatches is None else chat_mismatches[:LIST_LIMIT]
    res["transformers_id_differences"] = {"known_reason": KNOWN_TRANSFORMERS_DIFFERENCES.get(name),
                                          "first": transformers_mismatches[:LIST_LIMIT]}
    failed = bool(id_mismatches or decode_mismatches or chat_mismatches)
    return res, failed, raw


def check_harmony(root, raw):
    """Nibble's built-in harmony prompts against the published template's text, tokenized here."""
    chat = os.path.join(root, "chat")
    expected = json.load(open(os.path.join(chat, "harmony_expected.json"), encoding="utf-8"))["cases"]
    ours = json_lines(os.path.join(root, "ours", "gptoss.harmony.gz"))
    assert len(ours) == len(expected), f"harmony: {len(ours)} answers for {len(expected)} cases"
    mismatches = []
    for case, mine in zip(expected, ours):
        want = case["expected"]
        if "error" in want:
            if mine is not None:
                mismatches.append({"name": case["name"], "problem": "the template raises; Nibble rendered it"})
            continue
        if mine is None:
            mismatches.append({"name": case["name"], "problem": "Nibble refused; the template renders it"})
            continue
        theirs = raw.encode(want["text"], add_special_tokens=False).ids
        if mine != theirs:
            k = first_difference(mine, theirs)
            mismatches.append({"name": case["name"], "at": k, "ours": mine[k:k + 8], "tokenizers": theirs[k:k + 8]})
        elif raw.decode(mine, skip_special_tokens=False) != want["text"]:
            mismatches.append({"name": case["name"], "problem": "tokenizers' decode of the ids is not the text"})
    return {"cases": len(expected), "mismatches": len(mismatches), "first": mismatches[:LIST_LIMIT]}


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: python3 tokenizer_check.py DIR OUT_DIR")
    root, out_dir = sys.argv[1], sys.argv[2]
    import tokenizers
    import transformers
    report = {"tokenizers_version": tokenizers.__version__, "transformers_version": transformers.__version__,
              "results": {}}
    cases = corpus_cases(os.path.join(root, "corpus"))
    conversations = json.load(open(os.path.join(root, "chat", "conversations.json"), encoding="utf-8"))
    failed = False
    for name in sorted(os.listdir(os.path.join(root, "models"))):
        res, bad, raw = check_tokenizer(root, name, cases, conversations, transformers, tokenizers)
        c = res["counts"]
        line = (f"{name}: {len(cases)} cases, id mismatches {c['id_mismatches']}, decode mismatches "
                f"{c['decode_mismatches']}, chat mismatches "
                f"{'n/a' if c['chat_mismatches'] is None else c['chat_mismatches']}")
        if name == "gptoss":
            res["harmony"] = check_harmony(root, raw)
            bad |= res["harmony"]["mismatches"] > 0
            line += f", harmony mismatches {res['harmony']['mismatches']} of {res['harmony']['cases']}"
        line += f" | transformers differs from tokenizers on {c['transformers_id_differences']} cases"
        if c["transformers_id_differences"] and name in KNOWN_TRANSFORMERS_DIFFERENCES:
            line += " (known, see the report)"
        print(line, flush=True)
        report["results"][name] = res
        failed |= bad
    os.makedirs(out_dir, exist_ok=True)
    json.dump(report, open(os.path.join(out_dir, "tokenizer_check.json"), "w"), indent=1, ensure_ascii=False)
    print("ALL EQUAL" if not failed else "DIFFERENCES FOUND")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
