#!/usr/bin/env python3
"""Writes tests/tokenizer/chat/harmony_expected.json: what the published gpt-oss chat template
renders (through jinja_oracle.py, i.e. jinja2 set up like transformers) for our conversations,
with the date fixed. The template itself is not in this repository: pass its path.

    python3 tests/tokenizer/oracle/make_harmony_expected.py PATH/TO/gpt-oss/chat_template.jinja
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
chat = os.path.join(here, "..", "chat")
DATE = "2025-08-05"

template = open(sys.argv[1], encoding="utf-8").read()
chats = json.load(open(os.path.join(chat, "conversations.json"), encoding="utf-8"))
chats += json.load(open(os.path.join(chat, "harmony_conversations.json"), encoding="utf-8"))
for c in chats:
    c.setdefault("add_generation_prompt", True)
with tempfile.TemporaryDirectory() as tmp:
    req, out = os.path.join(tmp, "req.json"), os.path.join(tmp, "out.json")
    json.dump({"template": template, "date": DATE, "chats": chats}, open(req, "w", encoding="utf-8"))
    subprocess.run([sys.executable, os.path.join(here, "jinja_oracle.py"), req, out], check=True)
    answers = json.load(open(out, encoding="utf-8"))
result = {
    "template_sha256": hashlib.sha256(template.encode()).hexdigest(),
    "date": DATE,
    "cases": [{"name": c["name"], "expected": a} for c, a in zip(chats, answers)],
}
with open(os.path.join(chat, "harmony_expected.json"), "w", encoding="utf-8") as f:
    json.dump(result, f, ensure_ascii=False, indent=1)
print(f"{len(chats)} cases written")
