#!/usr/bin/env python3
"""Checks that Package.swift declares exactly what each target imports: no used module missing
(it would build only by accident, through another target's dependency) and no declared dependency
unused. Run by `make lint`. Reads the manifest through `swift package dump-package`."""
import json, os, re, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Modules that come with the toolchain, not from a declared dependency.
TOOLCHAIN = {"Foundation", "FoundationEssentials", "Glibc", "Musl", "Darwin", "Dispatch", "Synchronization",
             "Testing", "XCTest", "_Concurrency", "Swift", "os"}
# Products that are modules of another name or bring extra modules with them.
ALIASES = {"Metrics": {"Metrics", "CoreMetrics"}}

manifest = json.loads(subprocess.run(["swift", "package", "dump-package"], cwd=ROOT, check=True,
                                     capture_output=True, text=True).stdout)
IMPORT = re.compile(r"^\s*(?:@[\w()]+\s+)*import\s+(?:(?:struct|class|enum|func|protocol|typealias|var|let)\s+)?([A-Za-z_][\w]*)", re.M)
problems = []
for target in manifest["targets"]:
    if target["type"] in ("system", "binary", "plugin"):
        continue
    name = target["name"]
    path = target.get("path") or os.path.join("Tests" if target["type"] == "test" else "Sources", name)
    declared = {}
    for dep in target["dependencies"]:
        if "byName" in dep:
            module = dep["byName"][0]
        elif "product" in dep:
            module = dep["product"][0]
        else:
            module = dep["target"][0]
        declared[module] = ALIASES.get(module, {module})
    used = set()
    for folder, _, files in os.walk(os.path.join(ROOT, path)):
        for f in files:
            if f.endswith(".swift"):
                text = open(os.path.join(folder, f), encoding="utf-8").read()
                # Multi-line string literals (scripts in other languages inside tests) are not Swift.
                text = re.sub(r'#*"{3}[\s\S]*?"{3}#*', "", text)
                used |= set(IMPORT.findall(text))
            elif f.endswith((".c", ".h")):
                used.add("__c__")
    used -= TOOLCHAIN | {"__c__", name}
    provided = set().union(*declared.values()) if declared else set()
    for module in sorted(used - provided):
        problems.append(f"{name}: imports {module} but does not declare it")
    for dep, modules in sorted(declared.items()):
        if not (modules & used):
            problems.append(f"{name}: declares {dep} but never imports it")
for p in problems:
    print(p)
if problems:
    print(f"{len(problems)} dependency problem(s) in Package.swift", file=sys.stderr)
    sys.exit(1)
print("Package.swift declares exactly what each target imports")
