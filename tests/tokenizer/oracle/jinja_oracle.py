#!/usr/bin/env python3
"""Chat-template oracle: renders templates with Python's jinja2 configured the way transformers'
apply_chat_template configures it (sandboxed environment, trim_blocks, lstrip_blocks, loop
controls, transformers' tojson / raise_exception / strftime_now). Covers templates the Node.js
oracle's Jinja cannot parse (Qwen 3's, gpt-oss's).

    python3 jinja_oracle.py REQUEST.json OUT.json

REQUEST: {"template": str, "context": {...}, "date": "YYYY-MM-DD" (optional, fixes strftime_now),
          "chats": [{"messages": [...], "add_generation_prompt": bool, "tools": [...], "kwargs": {...}}]}
OUT: [{"text": str} or {"error": str}] in request order.
"""
import json
import sys
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment


def main():
    request_path, out_path = sys.argv[1], sys.argv[2]
    with open(request_path, encoding="utf-8") as f:
        request = json.load(f)
    fixed_date = request.get("date")

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        now = datetime.strptime(fixed_date, "%Y-%m-%d") if fixed_date else datetime.now()
        return now.strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    template = env.from_string(request["template"])

    out = []
    for chat in request["chats"]:
        context = dict(request.get("context", {}))
        context.update(messages=chat["messages"], tools=chat.get("tools"), documents=None,
                       add_generation_prompt=chat.get("add_generation_prompt", False))
        context.update(chat.get("kwargs", {}))
        try:
            out.append({"text": template.render(**context)})
        except Exception as e:  # a template that raises is an answer too
            out.append({"error": f"{type(e).__name__}: {e}"})
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
