import Crypto
import Foundation
import KilnCore

/// A sparse-HTTP Cargo registry on loopback (RFC 2789 layout: `config.json`, index files, downloads),
/// served by Python's http.server from crates this fixture packs itself, with real checksums.
public final class CrateRegistryFixture: @unchecked Sendable {
    // @unchecked: `crates` is written only while the fixture is set up, before it is shared.
    public struct Crate: Sendable {
        public var name: String
        public var version: String
        public var source: String
        /// (name, version requirement) of registry dependencies.
        public var dependencies: [(String, String)]
        /// SHA-256 of the `.crate` file.
        public var checksum: String = ""
    }

    public let root: TemporaryDirectory
    public private(set) var crates: [Crate] = []
    private var server: LaunchedProcess?
    public private(set) var port = 0

    public init() throws {
        root = try TemporaryDirectory(prefix: "kiln-registry")
        try FileManager.default.createDirectory(atPath: root.file("index"), withIntermediateDirectories: true)
    }

    /// The index URL to give workers (`--cargo-registry`).
    public var indexURL: String { "sparse+http://127.0.0.1:\(port)/index/" }

    /// Packs `name-version.crate` (a library whose `value()` returns `source`'s expression), adds its
    /// index line and download. Returns its checksum.
    @discardableResult
    public func publish(_ name: String, _ version: String, source: String, dependencies: [(String, String)] = []) async throws -> String {
        let stage = root.file("stage/\(name)-\(version)")
        try FileManager.default.createDirectory(atPath: stage + "/src", withIntermediateDirectories: true)
        let deps = dependencies.map { "\($0.0) = \"\($0.1)\"" }.joined(separator: "\n")
        try FileManager.default.writeFile(
            atPath: stage + "/Cargo.toml",
            contents: Data("[package]\nname = \"\(name)\"\nversion = \"\(version)\"\nedition = \"2021\"\n\n[dependencies]\n\(deps)\n".utf8))
        try FileManager.default.writeFile(atPath: stage + "/src/lib.rs", contents: Data(source.utf8))
        let downloads = root.file("dl/\(name)/\(version)")
        try FileManager.default.createDirectory(atPath: downloads, withIntermediateDirectories: true)
        try await Command.run(
            "/bin/tar", ["--sort=name", "--owner=0", "--group=0", "--numeric-owner", "-czf", downloads + "/download", "-C", root.file("stage"), "\(name)-\(version)"])
        let bytes = try Data(contentsOf: URL(fileURLWithPath: downloads + "/download"))
        let checksum = SHA256.hash(data: bytes).hexString
        try addIndexLine(name: name, version: version, checksum: checksum, dependencies: dependencies)
        crates.append(Crate(name: name, version: version, source: source, dependencies: dependencies, checksum: checksum))
        return checksum
    }

    /// Adds an index line (used directly by tests that make the index lie).
    public func addIndexLine(name: String, version: String, checksum: String, dependencies: [(String, String)] = []) throws {
        let deps: [[String: Any]] = dependencies.map {
            ["name": $0.0, "req": $0.1, "features": [String](), "optional": false, "default_features": true, "target": NSNull(), "kind": "normal"]
        }
        let line: [String: Any] = ["name": name, "vers": version, "deps": deps, "cksum": checksum, "features": [String: [String]](), "yanked": false]
        let data = try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys])
        let file = root.file("index/" + Self.indexPath(name))
        try FileManager.default.createDirectory(atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        var existing = (try? Data(contentsOf: URL(fileURLWithPath: file))) ?? Data()
        existing.append(data)
        existing.append(0x0A)
        try FileManager.default.writeFile(atPath: file, contents: existing)
    }

    static func indexPath(_ name: String) -> String {
        let n = name.lowercased()
        switch n.count {
        case 1: return "1/" + n
        case 2: return "2/" + n
        case 3: return "3/" + n.prefix(1) + "/" + n
        default: return n.prefix(2) + "/" + n.dropFirst(2).prefix(2) + "/" + n
        }
    }

    /// Replaces a published crate's download with other bytes (a tampered mirror).
    public func tamper(_ name: String, _ version: String) throws {
        try FileManager.default.writeFile(atPath: root.file("dl/\(name)/\(version)/download"), contents: Data("not the crate".utf8))
    }

    /// Starts serving on a port the OS picks.
    public func start() async throws {
        let server = try await LaunchedProcess(
            "/usr/bin/python3", ["-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", root.path])
        self.server = server
        let line = try await server.waitForLine(what: "the port it serves on") { $0.hasPrefix("Serving HTTP on 127.0.0.1 port ") }
        port = Int(line.split(separator: " ")[5]) ?? 0
        try FileManager.default.writeFile(atPath: root.file("index/config.json"), contents: Data("{\"dl\": \"http://127.0.0.1:\(port)/dl\"}".utf8))
    }

    public func stop() { server?.stop() }

    /// A Cargo.lock for a binary crate `app` depending on `dependencies` (names of published crates),
    /// pinning every published crate with its checksum (or `checksums` overrides).
    public func lockFile(app: String, dependencies: [String], checksums: [String: String] = [:]) -> String {
        var text = "version = 3\n\n"
        text += "[[package]]\nname = \"\(app)\"\nversion = \"0.1.0\"\ndependencies = [\n" + dependencies.sorted().map { " \"\($0)\",\n" }.joined() + "]\n\n"
        for c in crates.sorted(by: { $0.name < $1.name }) {
            text += "[[package]]\nname = \"\(c.name)\"\nversion = \"\(c.version)\"\n"
            text += "source = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"\(checksums[c.name] ?? c.checksum)\"\n"
            if !c.dependencies.isEmpty { text += "dependencies = [\n" + c.dependencies.map { " \"\($0.0)\",\n" }.joined() + "]\n" }
            text += "\n"
        }
        return text
    }

    /// A started registry of Debian's crate set (`/usr/share/cargo/registry`, the librust-*-dev packages;
    /// clap and serde_json with their dependencies where install-deps.sh installed them), packed by
    /// bench/debian_registry.py: real crates, real checksums, a real dependency graph.
    public static func debian() async throws -> CrateRegistryFixture {
        let registry = try CrateRegistryFixture()
        try await registry.start()
        var root = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { root.deleteLastPathComponent() }
        try await Command.run("/usr/bin/python3", [root.path + "/bench/debian_registry.py", registry.root.path, "http://127.0.0.1:\(registry.port)/dl"])
        return registry
    }

    /// A binary crate using clap (derive) and serde_json: 20 and more crates from `debian()`, no lock file.
    public static let clapAndSerdeProject = [
        "Cargo.toml": """
        [package]
        name = "debapp"
        version = "0.1.0"
        edition = "2021"

        [dependencies]
        clap = { version = "4", features = ["derive"] }
        serde_json = "1"

        """,
        "src/main.rs": """
        use clap::Parser;
        #[derive(Parser)]
        struct Args { #[arg(long, default_value = "kiln")] name: String }
        fn main() { let a = Args::parse(); println!("{}", serde_json::json!({"hello": a.name})); }

        """,
    ]

    /// A started registry with `kiln_leaf` and `kiln_mid` (which depends on `kiln_leaf`).
    public static func twoCrates() async throws -> CrateRegistryFixture {
        let registry = try CrateRegistryFixture()
        try await registry.publish("kiln_leaf", "0.1.0", source: "pub fn value() -> u32 { 40 }\n")
        try await registry.publish("kiln_mid", "0.2.0", source: "pub fn value() -> u32 { kiln_leaf::value() + 2 }\n", dependencies: [("kiln_leaf", "^0.1")])
        try await registry.start()
        return registry
    }

    /// An app using both crates of `twoCrates`, with its Cargo.lock (checksums overridable).
    public func appProject(checksums: [String: String] = [:]) -> [String: String] {
        [
            "Cargo.toml": """
            [package]
            name = "app"
            version = "0.1.0"
            edition = "2021"

            [dependencies]
            kiln_leaf = "0.1"
            kiln_mid = "0.2"

            """,
            "src/main.rs": "fn main() { println!(\"{} {}\", kiln_leaf::value(), kiln_mid::value()); }\n",
            "Cargo.lock": lockFile(app: "app", dependencies: ["kiln_leaf", "kiln_mid"], checksums: checksums),
        ]
    }

    deinit { stop() }
}
