"""How pydoc_chat.jsonl, the small chat set tnlm ships (`data.path=builtin:pydoc-chat`), was made.

Questions about Python's built-in functions and the methods of str, list and dict, and the functions of
math, os.path and random, answered in one recognisable format, the call signature, " -- ", then the first
paragraph of the docstring:

    user:      What does math.sqrt do?
    assistant: math.sqrt(x, /) -- Return the square root of x.

The answers are derived from the docstrings of the running Python, part of tnlm's built-in pretraining
corpus (the standard library's documentation); the questions, the follow-ups ("And str.split?"), the
greetings and the system messages are tnlm's own. A few hundred dialogues, some with two or three
exchanges, some with a system message. The shipped file was written with CPython 3.11; rerun to
regenerate (the docstrings, and so the answers, vary a little between Python versions):

    python -m tnlm.training.finetune.pydoc_chat src/tnlm/training/finetune/pydoc_chat.jsonl
"""

from __future__ import annotations

import builtins
import inspect
import json
import math
import os.path
import random
import sys
from pathlib import Path

MODULES = ((builtins, ""), (str, "str."), (list, "list."), (dict, "dict."), (math, "math."), (os.path, "os.path."),
           (random, "random."))  # fmt: skip
SKIP = {"copyright", "credits", "exit", "help", "license", "quit", "breakpoint", "property"}
QUESTIONS = ("What does {} do?", "Explain {}.", "What is {} for?", "How do I use {}?", "Tell me about {}.",
             "{}?", "what does {} do", "Can you explain {} to me?")  # fmt: skip
FOLLOW_UPS = ("And {}?", "What about {}?", "And {} then?", "Now {}.")
SYSTEMS = ("You are a terse Python reference: answer with the signature and one line.",
           "Answer questions about Python functions briefly.")  # fmt: skip
GREETINGS = ("Hi", "Hello", "Hello!", "hi there", "Who are you?", "What can you do?")
GREETING_ANSWER = ("Hello! I answer questions about Python's built-in functions and the methods of str, list "
                   "and dict, e.g. len, str.split or math.sqrt.")  # fmt: skip
SEED = 0


def entries() -> list[tuple[str, str]]:
    """(name, answer) for every documented function with a signature and a short first paragraph."""
    out = []
    for module, prefix in MODULES:
        for name in sorted(dir(module)):
            obj = getattr(module, name)
            if name.startswith("_") or name in SKIP or not callable(obj):
                continue
            if inspect.isclass(obj) and issubclass(obj, BaseException):
                continue
            answer = _answer(prefix + name, obj)
            if answer is not None:
                out.append((prefix + name, answer))
    return out


def _answer(name: str, obj: object) -> str | None:
    try:
        signature = str(inspect.signature(obj)).replace("(self, /)", "()").replace("(self, ", "(")
    except (TypeError, ValueError):
        return None
    summary = " ".join((inspect.getdoc(obj) or "").strip().split("\n\n")[0].split())
    if not summary or len(summary) > 120:
        return None
    return f"{name}{signature} -- {summary}"


def dialogues(seed: int = SEED) -> list[dict]:
    rng = random.Random(seed)
    items = entries()
    out = []
    for i, (name, answer) in enumerate(items):
        messages = [{"role": "system", "content": rng.choice(SYSTEMS)}] if rng.random() < 0.2 else []
        messages += [_user(rng.choice(QUESTIONS), name), {"role": "assistant", "content": answer}]
        for _ in range(rng.choice((0, 0, 1, 2))):  # a third of the dialogues go on
            other, other_answer = rng.choice(items)
            messages += [_user(rng.choice(FOLLOW_UPS), other), {"role": "assistant", "content": other_answer}]
        out.append({"messages": messages})
    for greeting in GREETINGS * 3:
        messages = [{"role": "user", "content": greeting}, {"role": "assistant", "content": GREETING_ANSWER}]
        if rng.random() < 0.5:
            name, answer = rng.choice(items)
            messages += [_user(rng.choice(QUESTIONS), name), {"role": "assistant", "content": answer}]
        out.append({"messages": messages})
    rng.shuffle(out)
    return out


def _user(template: str, name: str) -> dict:
    return {"role": "user", "content": template.format(name)}


def main(path: str) -> None:
    rows = dialogues()
    Path(path).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} dialogues -> {path}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).with_name("pydoc_chat.jsonl")))
