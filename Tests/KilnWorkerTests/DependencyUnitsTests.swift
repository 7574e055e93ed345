import Foundation
import KilnArchive
import KilnTestSupport
import Testing

@testable import KilnWorker

/// #31 item 3, without cargo: which units a compiled-dependency entry keeps, and the skeleton the
/// dependency-only step compiles.
@Suite struct DependencyUnitsTests {
    static let registryHash = "0123456789abcdef"
    static let pathHash = "fedcba9876543210"

    @Test(
        arguments: [
            ("libclap-0123456789abcdef.rlib", "0123456789abcdef"), ("clap-0123456789abcdef.d", "0123456789abcdef"),
            ("serde-0123456789abcdef", "0123456789abcdef"), ("proc-macro2-0123456789abcdef", "0123456789abcdef"),
            ("libfoo.rlib", nil), ("foo-0123456789abcdeg", nil), ("foo-0123456789abcdef0", nil), ("foo-0123456789ABCDEF", nil),
        ] as [(String, String?)])
    func aUnitsHashIsReadFromItsName(_ name: String, _ hash: String?) {
        #expect(DependencyUnits.unitHash(ofName: name[...]) == hash)
    }

    @Test func onlyUnitsCargoReportedForRegistryPackagesAreKept() {
        let units = DependencyUnits()
        units.consider(
            jsonLine:
                #"{"reason":"compiler-artifact","package_id":"registry+https://github.com/rust-lang/crates.io-index#clap@4.0.32","filenames":["/build/out/target/release/deps/libclap-0123456789abcdef.rlib"]}"#
        )
        units.consider(
            jsonLine:
                #"{"reason":"build-script-executed","package_id":"serde 1.0.0 (registry+https://github.com/rust-lang/crates.io-index)","out_dir":"/build/out/target/release/build/serde-1111111111111111/out"}"#
        )
        units.consider(
            jsonLine:
                #"{"reason":"compiler-artifact","package_id":"path+file:///build/src#app@0.1.0","filenames":["/build/out/target/release/deps/app-fedcba9876543210"]}"#)
        // A hash cargo reported for both is never kept.
        units.consider(
            jsonLine:
                #"{"reason":"compiler-artifact","package_id":"path+file:///build/src#odd@0.1.0","filenames":["/build/out/target/release/deps/libodd-0123456789abcdef.rlib"]}"#
        )
        units.consider(jsonLine: #"{"reason":"compiler-artifact","package_id":"git+https://example.com/x#x@1.0","filenames":[]}"#)
        units.consider(jsonLine: "not json")
        #expect(units.registryUnits == ["1111111111111111"])
        #expect(units.otherPackages == ["git+https://example.com/x#x@1.0"])
    }

    /// The attack: the step's registry code prints fake cargo messages without end. What is kept stays
    /// at the limit, and the step is not cached.
    @Test func fakeMessagesPastTheLimitAreNotKeptAndTheStepIsNotCached() {
        let units = DependencyUnits(limit: 1000)
        for n in 0..<50_000 {
            units.consider(
                jsonLine:
                    #"{"reason":"compiler-artifact","package_id":"registry+https://github.com/rust-lang/crates.io-index#x@1.0","filenames":["/build/out/target/release/deps/libx-"#
                    + String(format: "%016x", n) + #".rlib"]}"#)
        }
        #expect(units.overflowed)
        #expect(units.registryUnits.count < 1000)
    }

    @Test func theSelectionHoldsKeptUnitsAndTheirDirectoriesAndRefusesLinks() throws {
        let dir = try TemporaryDirectory(prefix: "kiln-units")
        let fm = FileManager.default
        for path in [
            "release/deps/libclap-0123456789abcdef.rlib", "release/deps/clap-0123456789abcdef.d", "release/.fingerprint/clap-0123456789abcdef/lib-clap",
            "release/build/serde-0123456789abcdef/out/generated.rs", "release/deps/app-fedcba9876543210", "release/app",
            "release/.fingerprint/app-fedcba9876543210/bin-app",
        ] {
            try fm.createDirectory(atPath: dir.file((path as NSString).deletingLastPathComponent), withIntermediateDirectories: true)
            try Data("x".utf8).write(to: URL(fileURLWithPath: dir.file(path)))
        }
        let selection = try DependencyUnits.selection(in: try ConfinedDirectory(path: dir.path), keep: [Self.registryHash], maxEntries: 1000)
        let paths = selection.map(\.path)
        #expect(paths.contains("release/deps/libclap-0123456789abcdef.rlib") && paths.contains("release/build/serde-0123456789abcdef/out/generated.rs"))
        #expect(paths.contains("release/.fingerprint/clap-0123456789abcdef/lib-clap"))
        #expect(!paths.contains { $0.contains("app") }, "the project's own units stay out: \(paths)")
        #expect(paths.firstIndex(of: "release") ?? 99 < paths.firstIndex(of: "release/deps") ?? 0, "parents first")
        #expect(Set(paths).count == paths.count)
        try fm.createSymbolicLink(atPath: dir.file("release/deps/libclap-0123456789abcdef.rmeta"), withDestinationPath: "/etc/passwd")
        #expect(throws: DependencyCacheError.self) {
            _ = try DependencyUnits.selection(in: try ConfinedDirectory(path: dir.path), keep: [Self.registryHash], maxEntries: 1000)
        }
    }

    static func metadata(_ packages: [(String, String, [(String, String)])], root: String = "/build/src") -> [UInt8] {
        let list: [[String: Any]] = packages.map { name, manifest, targets in
            ["name": name, "manifest_path": manifest, "targets": targets.map { ["kind": [$0.0], "src_path": $0.1] }]
        }
        return Array(try! JSONSerialization.data(withJSONObject: ["packages": list, "workspace_root": root]))
    }

    @Test func theSkeletonHasTheManifestsAndLockAndAStubForEveryTarget() throws {
        let dir = try TemporaryDirectory(prefix: "kiln-skeleton")
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir.file("src"), withIntermediateDirectories: true)
        try Data("[package]\nname = \"app\"\n".utf8).write(to: URL(fileURLWithPath: dir.file("Cargo.toml")))
        try Data("version = 3\n".utf8).write(to: URL(fileURLWithPath: dir.file("Cargo.lock")))
        try Data("fn main() { steal() }".utf8).write(to: URL(fileURLWithPath: dir.file("build.rs")))
        let tree = try ConfinedDirectory(path: dir.path)
        let skeleton = try DependencySkeleton.make(
            metadata: Self.metadata([
                ("app", "/build/src/Cargo.toml", [("bin", "/build/src/src/main.rs"), ("lib", "/build/src/src/lib.rs"), ("custom-build", "/build/src/build.rs")])
            ]), tree: tree)
        #expect(skeleton.packages == ["app"])
        #expect(skeleton.files["Cargo.toml"] == Array("[package]\nname = \"app\"\n".utf8))
        #expect(skeleton.files["Cargo.lock"] == Array("version = 3\n".utf8))
        #expect(skeleton.files["src/main.rs"] == DependencySkeleton.stubBinary && skeleton.files["src/lib.rs"] == [])
        #expect(skeleton.files["build.rs"] == DependencySkeleton.stubBinary, "the project's build script is never compiled")
        try skeleton.write(to: dir.file("skeleton"))
        #expect(try String(contentsOfFile: dir.file("skeleton/build.rs"), encoding: .utf8) == "fn main() {}\n")

        for bad in ["/etc/passwd", "/build/src/../../etc/passwd", "/build/src/./x.rs", "/build/srcx/main.rs"] {
            #expect(throws: DependencyCacheError.self, "\(bad)") {
                _ = try DependencySkeleton.make(metadata: Self.metadata([("app", "/build/src/Cargo.toml", [("bin", bad)])]), tree: tree)
            }
        }
        #expect(throws: DependencyCacheError.self) { _ = try DependencySkeleton.make(metadata: Array("[]".utf8), tree: tree) }
    }
}
