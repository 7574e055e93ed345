# Helpers the benchmarks source (bash): free ports, waiting for a log line, Debian's crate set as a
# sparse registry on loopback, a cargo home pointing at it, and the clap + serde_json project.
# Expects $work (a scratch directory) and the pids array of the sourcing script.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq "${3:-600}"); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done; cat "$1" >&2; return 1; }

# Serves Debian's crates (bench/debian_registry.py) on a free port; sets INDEX to its sparse index URL.
start_debian_registry() {
  local rp; rp=$(port)
  mkdir -p "$work/registry"
  python3 -u -m http.server "$rp" --bind 127.0.0.1 --directory "$work/registry" > "$work/registry.log" 2>&1 & pids+=($!)
  python3 bench/debian_registry.py "$work/registry" "http://127.0.0.1:$rp/dl"
  INDEX="sparse+http://127.0.0.1:$rp/index/"
}

# A fresh CARGO_HOME at $1 whose crates.io is the registry at $INDEX.
bare_home() { rm -rf "$1"; mkdir -p "$1"; printf '[source.crates-io]\nreplace-with = "mirror"\n[source.mirror]\nregistry = "%s"\n' "$INDEX" > "$1/config.toml"; }

# The clap (derive) + serde_json binary crate named $2 in directory $1, with its lock resolved against $INDEX.
clap_serde_project() {
  mkdir -p "$1/src"
  printf '[package]\nname = "%s"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\nclap = { version = "4", features = ["derive"] }\nserde_json = "1"\n' "$2" > "$1/Cargo.toml"
  cat > "$1/src/main.rs" <<'RS'
use clap::Parser;
#[derive(Parser)]
struct Args { #[arg(long, default_value = "kiln")] name: String }
fn main() { let a = Args::parse(); println!("{}", serde_json::json!({"hello": a.name})); }
RS
  bare_home "$work/lock-home"
  (cd "$1" && CARGO_HOME="$work/lock-home" cargo generate-lockfile -q)
}
