#!/usr/bin/env python3
"""Packs Debian's crate directory (/usr/share/cargo/registry, from the librust-*-dev packages) into a
sparse-HTTP Cargo registry: one .crate per crate (tar.gz of its directory), index lines built from
its normalized Cargo.toml, and config.json pointing downloads at DL_URL. A real crate set for the fetch
benchmark, served on loopback. Usage: debian_registry.py OUT_DIR DL_URL [SOURCE_DIR]"""
import hashlib, io, json, os, sys, tarfile, tomllib

out, dl = sys.argv[1], sys.argv[2]
src = sys.argv[3] if len(sys.argv) > 3 else "/usr/share/cargo/registry"

def index_path(name):
    n = name.lower()
    return {1: f"1/{n}", 2: f"2/{n}", 3: f"3/{n[0]}/{n}"}.get(len(n), f"{n[:2]}/{n[2:4]}/{n}")

def deps(manifest):
    result = []
    def add(table, kind, target=None):
        for name, spec in (table or {}).items():
            if isinstance(spec, str):
                spec = {"version": spec}
            result.append({
                "name": spec.get("package", name), "req": spec.get("version", "*"),
                "features": spec.get("features", []), "optional": spec.get("optional", False),
                "default_features": spec.get("default-features", spec.get("default_features", True)),
                "target": target, "kind": kind, **({"package": spec["package"], "name": name} if "package" in spec else {}),
            })
    add(manifest.get("dependencies"), "normal")
    add(manifest.get("build-dependencies"), "build")
    for target, tables in (manifest.get("target") or {}).items():
        add(tables.get("dependencies"), "normal", target)
        add(tables.get("build-dependencies"), "build", target)
    return result

index = {}
count = 0
for entry in sorted(os.listdir(src)):
    path = os.path.join(src, entry)
    manifest_path = os.path.join(path, "Cargo.toml")
    if not os.path.isfile(manifest_path):
        continue
    with open(manifest_path, "rb") as f:
        manifest = tomllib.load(f)
    name, version = manifest["package"]["name"], str(manifest["package"]["version"])
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d != "debian")
            for file in sorted(files):
                full = os.path.join(root, file)
                if os.path.islink(full) or file == ".cargo-checksum.json":
                    continue
                tar.add(full, arcname=f"{name}-{version}/" + os.path.relpath(full, path), recursive=False)
    crate = buffer.getvalue()
    checksum = hashlib.sha256(crate).hexdigest()
    os.makedirs(os.path.join(out, "dl", name, version), exist_ok=True)
    with open(os.path.join(out, "dl", name, version, "download"), "wb") as f:
        f.write(crate)
    features = {k: v for k, v in (manifest.get("features") or {}).items()}
    line = {"name": name, "vers": version, "deps": deps(manifest), "cksum": checksum, "features": features, "yanked": False}
    index.setdefault(index_path(name), []).append(json.dumps(line, sort_keys=True))
    count += 1
for rel, lines in index.items():
    os.makedirs(os.path.dirname(os.path.join(out, "index", rel)), exist_ok=True)
    with open(os.path.join(out, "index", rel), "w") as f:
        f.write("\n".join(lines) + "\n")
with open(os.path.join(out, "index", "config.json"), "w") as f:
    json.dump({"dl": dl}, f)
print(f"{count} crates", file=sys.stderr)
