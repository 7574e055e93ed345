import ArgumentParser
import Foundation
import KilnArchive
import KilnAttestation

struct SubmitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "submit",
        abstract: "Submit a build: a directory, a .zip/.tar.gz, or a git repository.",
        discussion: """
            A directory is packed as a tar.gz: in a git checkout only the files git tracks, otherwise everything but \
            target/ and .git/. Without --nonce a random one is chosen and printed; keep it to verify the result.
            """)

    @Argument(help: "DIR, FILE.zip or FILE.tar.gz (default: the current directory) — or use --repo.") var source: String?
    @Option(help: "Git repository URL (https, http or git).") var repo: String?
    @Option(help: "Branch, tag or commit (with --repo).") var ref: String = "HEAD"
    @Option(help: "Nonce to bind into the attestation (hex, at most 16 bytes).") var nonce: String?
    @Flag(help: "Follow the build's events until it ends.") var follow = false
    @Option(name: .shortAndLong, help: "With --follow: download the result here when it is ready.") var output: String?
    @OptionGroup var gateway: GatewayOptions

    func run() async throws {
        let chosenNonce = nonce ?? Nonce.random()
        if case .failure(let e) = Nonce.validate(chosenNonce) { throw ValidationError(e.description) }
        let client = try gateway.client
        var body: [String: Any] = ["nonce": chosenNonce]
        if let repo {
            if source != nil { throw ValidationError("give a source or --repo, not both") }
            body["repo_url"] = repo
            body["repo_ref"] = ref
        } else {
            let path = source ?? FileManager.default.currentDirectoryPath
            let (bytes, name) = try SourcePacker.pack(path)
            body["source_data"] = Data(bytes).base64EncodedString()
            body["source_name"] = name
        }
        let reply = try await client.send(.POST, "/build", body: Array(try JSONSerialization.data(withJSONObject: body)), contentType: "application/json")
        guard let id = reply["job_id"] as? String else { throw CLIError("unexpected gateway reply: \(reply)") }
        print("job \(id)")
        print("nonce \(chosenNonce)")
        guard follow else { return }
        let terminal = try await EventPrinter(client: client).follow(id)
        if terminal == "done", let output {
            let size = try await client.download(id, to: output)
            print("result \(output) (\(size) bytes); verify with: kiln verify \(output) --nonce \(chosenNonce) --gateway \(client.base)")
        }
        if terminal != "done" { throw ExitCode(1) }
    }
}

/// Packs a submission.
enum SourcePacker {
    static func pack(_ path: String) throws -> ([UInt8], String) {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw CLIError("\(path) does not exist") }
        let name = URL(fileURLWithPath: path).standardizedFileURL.lastPathComponent
        if !isDir.boolValue {
            let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
            guard bytes.starts(with: [0x50, 0x4B]) || bytes.starts(with: [0x1F, 0x8B]) else {
                throw CLIError("\(path) is not a .zip or .tar.gz")
            }
            return (bytes, name)
        }
        let files = try trackedFiles(path) ?? walk(path)
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-submit-\(UUID().uuidString).tar.gz").path
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        let writer = try TarballWriter(path: tmp, mtime: Int64(Date().timeIntervalSince1970))
        for rel in files.sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }) {
            try writer.addFile(name + "/" + rel, contentsOf: path + "/" + rel)
        }
        try writer.finish()
        return (Array(try Data(contentsOf: URL(fileURLWithPath: tmp))), name + ".tar.gz")
    }

    /// `git ls-files` inside a checkout (regular files only), nil elsewhere.
    static func trackedFiles(_ dir: String) throws -> [String]? {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/git")
        p.arguments = ["-C", dir, "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return nil }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { return nil }
        return data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }.filter { rel in
            var st = stat()
            return lstat(dir + "/" + rel, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
        }
    }

    static func walk(_ dir: String) throws -> [String] {
        var out: [String] = []
        let e = FileManager.default.enumerator(atPath: dir)
        while let rel = e?.nextObject() as? String {
            let top = rel.split(separator: "/").first.map(String.init) ?? rel
            if top == "target" || top == ".git" {
                if rel == top { e?.skipDescendants() }
                continue
            }
            var st = stat()
            if lstat(dir + "/" + rel, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG { out.append(rel) }
        }
        return out
    }
}
