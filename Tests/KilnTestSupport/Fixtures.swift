import Foundation

/// Source trees the tests build.
public enum Fixtures {
    /// A crate with no dependencies that prints a greeting.
    public static func helloCrate(name: String = "hello", message: String = "hello from kiln", buildRS: String? = nil) -> [String: String] {
        var files = [
            "Cargo.toml": """
            [package]
            name = "\(name)"
            version = "0.1.0"
            edition = "2021"
            \(buildRS == nil ? "" : "build = \"build.rs\"")

            """,
            "src/main.rs": "fn main() { println!(\"\(message)\"); }\n",
        ]
        if let buildRS { files["build.rs"] = buildRS }
        return files
    }

    /// A crate that does not compile.
    public static let brokenCrate: [String: String] = [
        "Cargo.toml": "[package]\nname = \"broken\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
        "src/main.rs": "fn main() { let x: u32 = \"not a number\"; }\n",
    ]

    /// A `default.nix` that needs no nixpkgs: the builder is the sandbox's /bin/sh.
    public static let nixDefault: [String: String] = [
        "default.nix": """
        derivation {
          name = "kiln-nix-fixture";
          system = builtins.currentSystem;
          builder = "/bin/sh";
          args = [ "-c" "echo hello from nix > $out" ];
        }

        """
    ]

    public static let nixFlake: [String: String] = [
        "flake.nix": """
        {
          description = "kiln flake fixture";
          outputs = { self }: {
            packages.x86_64-linux.default = derivation {
              name = "kiln-flake-fixture";
              system = "x86_64-linux";
              builder = "/bin/sh";
              args = [ "-c" "echo hello from a flake > $out" ];
            };
          };
        }

        """
    ]

    /// Writes `files` under `dir`.
    public static func write(_ files: [String: String], to dir: String) throws {
        for (path, content) in files {
            let full = dir + "/" + path
            try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try content.write(toFile: full, atomically: true, encoding: .utf8)
        }
    }

    /// Packs `files` under a top-level `root/` directory with the system's tar or zip.
    public static func archive(_ files: [String: String], root: String, zip: Bool) async throws -> [UInt8] {
        let dir = try TemporaryDirectory(prefix: "kiln-archive")
        try write(files, to: dir.file(root))
        let out = dir.file(zip ? "a.zip" : "a.tar.gz")
        if zip {
            try await Command.run("/usr/bin/python3", ["-c", "import shutil; shutil.make_archive('a', 'zip', '.', '\(root)')"], workingDirectory: dir.path)
        } else {
            try await Command.run("/bin/tar", ["czf", out, root], workingDirectory: dir.path)
        }
        return Array(try Data(contentsOf: URL(fileURLWithPath: out)))
    }
}
