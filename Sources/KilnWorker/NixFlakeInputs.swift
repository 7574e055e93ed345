import Foundation
import KilnArchive
import KilnCore
import KilnMessages
import KilnProcess

/// The fetch phase of a flake build: every input `flake.lock` pins is put into the Nix store before
/// the offline build runs, so the build never fetches. An input already in the store (the same
/// narHash: the store is the cache) is used as it is; a `git` (or `github`) input comes from kiln-fetch
/// over the bus like a build's repository (the fetch service's host policy, so only hosts the farm
/// allows; the worker indexes the pack and checks the commit) at the locked commit, is added to the
/// store, and is refused unless it lands exactly at the store path `flake.lock`'s narHash names.
struct NixFlakeInputs {
    struct Input: Equatable {
        var name: String
        var type: String
        /// A git URL (for `github`, the repository's https URL).
        var url: String?
        var rev: String?
        /// SRI, `sha256-…`.
        var narHash: String
    }

    /// The locked inputs of a flake.lock (at most 256; a lock file of at most 1 MiB).
    static func parse(_ bytes: [UInt8]) throws(BuildFailure) -> [Input] {
        guard bytes.count <= 1 << 20, let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any],
            let nodes = object["nodes"] as? [String: Any], let root = object["root"] as? String
        else { throw BuildFailure(phase: "fetch", message: "flake.lock is not a flake lock file", suggestedAction: "run nix flake lock and commit flake.lock") }
        var inputs: [Input] = []
        for (name, value) in nodes.sorted(by: { $0.key < $1.key }) where name != root {
            guard let node = value as? [String: Any], let locked = node["locked"] as? [String: Any] else { continue }
            guard let type = locked["type"] as? String, let narHash = locked["narHash"] as? String, isSRISHA256(narHash) else {
                throw BuildFailure(
                    phase: "fetch", message: "flake input '\(name)' is not locked to a narHash", suggestedAction: "run nix flake lock and commit flake.lock")
            }
            var input = Input(name: name, type: type, url: nil, rev: locked["rev"] as? String, narHash: narHash)
            switch type {
            case "git": input.url = locked["url"] as? String
            case "github":
                if let owner = locked["owner"] as? String, let repo = locked["repo"] as? String, Subjects.isValidToken(owner), isRepoName(repo) {
                    input.url = "https://github.com/\(owner)/\(repo).git"
                }
            default: break
            }
            inputs.append(input)
        }
        guard inputs.count <= 256 else { throw BuildFailure(phase: "fetch", message: "flake.lock has more than 256 inputs", suggestedAction: "use fewer inputs") }
        return inputs
    }

    static func isSRISHA256(_ s: String) -> Bool {
        s.hasPrefix("sha256-") && s.utf8.count == 51 && Base64.decode(s.dropFirst(7))?.count == 32
    }

    static func isRepoName(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 100
            && s.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 45 || $0 == 95 || $0 == 46 }
    }

    let nixEnvironment: [String: String]
    let fetcher: SourceFetcher
    let cancel: CancelSwitch

    /// Makes every input available in the store; returns what came from where.
    func provide(_ inputs: [Input], scratch: String, log: @escaping @Sendable (String) -> Void) async throws -> CacheSummary {
        var summary = CacheSummary()
        for (index, input) in inputs.enumerated() {
            summary.crates += 1
            let expected = try await storePath(for: input)
            if try await isValid(expected) {
                summary.hits += 1
                continue
            }
            summary.misses += 1
            guard let url = input.url, let rev = input.rev, rev.utf8.count == 40, rev.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }) else {
                throw BuildFailure(
                    phase: "fetch",
                    message: "flake input '\(input.name)' (type \(input.type)) is not in the farm's Nix store, and Kiln fetches only git inputs locked to a commit",
                    suggestedAction: "use git inputs, or ask the operator to add it to the workers' store")
            }
            // The directory's name is the store path's name: flake inputs are "source".
            let directory = scratch + "/flake-inputs/\(index)/source"
            do {
                _ = try await fetcher.fetchGit(url: url, ref: rev, into: directory, cancel: cancel, log: log)
            } catch let failure as BuildFailure {
                throw BuildFailure(
                    phase: "fetch", message: "flake input '\(input.name)': \(failure.message)", retryable: failure.retryable,
                    suggestedAction: failure.suggestedAction)
            }
            summary.bytesFetched += Self.size(of: directory)
            let added = try await nix("/usr/bin/nix-store", ["--add-fixed", "--recursive", "sha256", directory], what: "add flake input '\(input.name)' to the store")
            guard added == expected else {
                throw BuildFailure(
                    phase: "fetch",
                    message: "flake input '\(input.name)' at \(rev) from \(url) does not match flake.lock's narHash \(input.narHash): refused",
                    suggestedAction: "run nix flake lock again and commit flake.lock")
            }
            log("flake input '\(input.name)' fetched from \(url) at \(rev.prefix(12)) → \(added)")
        }
        return summary
    }

    /// The store path a flake input with this narHash has (`<hash>-source`).
    func storePath(for input: Input) async throws -> String {
        let base32 = try await nix(
            "/usr/bin/nix", ["--extra-experimental-features", "nix-command", "hash", "to-base32", input.narHash], what: "read the narHash of '\(input.name)'")
        return try await nix("/usr/bin/nix-store", ["--print-fixed-path", "--recursive", "sha256", base32, "source"], what: "compute the store path of '\(input.name)'")
    }

    func isValid(_ path: String) async throws -> Bool {
        let r = try await ProcessRunner.capture("/usr/bin/nix-store", ["--check-validity", path], environment: nixEnvironment, cancel: cancel)
        return r.outcome.succeeded
    }

    private func nix(_ executable: String, _ arguments: [String], what: String) async throws -> String {
        let r = try await ProcessRunner.capture(executable, arguments, environment: nixEnvironment, timeout: .seconds(300), cancel: cancel)
        if r.outcome.cancelled { throw BuildCancelled() }
        guard r.outcome.succeeded else {
            throw BuildFailure.farm(
                "fetch", "cannot \(what): \(r.stderr.split(separator: "\n").last ?? "")", operatorAction: "check the workers' Nix installation and daemon")
        }
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func size(of directory: String) -> Int64 {
        var total: Int64 = 0
        let e = FileManager.default.enumerator(atPath: directory)
        while let rel = e?.nextObject() as? String {
            var st = stat()
            if lstat(directory + "/" + rel, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG { total += Int64(st.st_size) }
        }
        return total
    }
}
