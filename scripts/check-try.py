#!/usr/bin/env python3
"""Every `try?` in Sources/ says why dropping the error is right (#30: errors reach someone).

A `try?` passes when a comment stands on its line or the line above, or when it is a condition of
a `guard`/`if`/`while` or has a `??` default (the failure then takes a branch the code wrote for
it: a refusal, a default, a retry), or is one of two idioms whose only error is understood:
`try? await Task.sleep` (cancellation) and cleanup in a `defer` (closing or removing on the way
out, after the real error, if any, has been thrown). Anything else — a statement that silently
drops an error — is listed.
Run by `make lint`."""
import os, re, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONDITION = re.compile(r"^\s*(\}\s*else\s+)?(guard|if|while)\b|,\s*let\s+\w+\s*=\s*\(?try\?|^\s*let\s+\w+\s*=\s*\(?try\?.*\?\?")
problems = []
for folder, _, files in os.walk(os.path.join(ROOT, "Sources")):
    for name in sorted(files):
        if not name.endswith(".swift"):
            continue
        path = os.path.join(folder, name)
        lines = open(path, encoding="utf-8").read().split("\n")
        for i, line in enumerate(lines):
            if "try?" not in line:
                continue
            above = lines[i - 1].strip() if i else ""
            if "//" in line or above.startswith("//"):
                continue
            if "try? await Task.sleep" in line or re.search(r"defer \{ try\? ", line):
                continue
            # A condition may span lines: look back through continuation lines (ending in `,` or an
            # operator) to the statement's start.
            j = i
            while j > 0 and re.search(r"(,|&&|\|\||\(|=)\s*$", lines[j - 1].rstrip()):
                j -= 1
            if CONDITION.search(lines[j]) or CONDITION.search(line) or "?? " in line:
                continue
            if j > 0 and lines[j - 1].strip().startswith("//"):
                continue
            problems.append(f"{os.path.relpath(path, ROOT)}:{i + 1}: {line.strip()}")
for p in problems:
    print(p)
if problems:
    print(f"{len(problems)} try? without a reason (a comment on or above the line)", file=sys.stderr)
    sys.exit(1)
print("every try? in Sources/ says why")
