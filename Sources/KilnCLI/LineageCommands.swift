import ArgumentParser
import Foundation
import KilnArchive
import KilnAttestation

/// Options shared by the commands that start a job from an earlier one.
struct FollowOptions: ParsableArguments {
    @Option(help: "Nonce for the new job (hex); the gateway picks a fresh one if omitted.") var nonce: String?
    @Flag(help: "Follow the new job until it ends.") var follow = false
    @Option(name: .shortAndLong, help: "With --follow: where to write the result.") var output: String?

    var body: [UInt8]? { nonce.map { Array("{\"nonce\":\"\($0)\"}".utf8) } }
}

struct RetryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retry", abstract: "Run an ended job again as a new job: same inputs, a fresh nonce, its lineage recorded.")
    @Argument(help: "The job to retry.") var id: String
    @OptionGroup var options: FollowOptions
    @OptionGroup var gateway: GatewayOptions

    func run() async throws {
        let client = try gateway.client
        let doc = try await client.send(.POST, "/build/\(id)/retry", body: options.body, contentType: "application/json")
        guard let job = doc["job_id"] as? String, let nonce = doc["nonce"] as? String else { throw CLIError("the gateway's answer has no job_id") }
        print("job \(job) retries \(id); nonce \(nonce)")
        try await FollowedJob(client: client, id: job, nonce: nonce).finish(options)
    }
}

struct RebuildCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rebuild",
        abstract: "Rebuild a result on a fresh worker and compare: the new result carries a signed comparison with the original.",
        discussion: """
            Give a job id, or a result tarball. For a job this farm holds, the rebuild uses the inputs its record holds \
            (a repository build: the commit it built) and its result carries a signed comparison: check it with \
            kiln verify REBUILD --rebuilt --original ORIGINAL. For a result from anywhere else, the CLI submits the inputs \
            the result's provenance names (the repository at the commit it built, or the archive you give with --source) \
            and compares the two results itself. Exits 2 when the rebuild did not reproduce the original.
            """)
    @Argument(help: "A job id, or RESULT.tar.gz.") var original: String
    @Option(help: "For a result built elsewhere from an uploaded archive: that archive (its SHA-256 is checked).") var source: String?
    @OptionGroup var options: FollowOptions
    @OptionGroup var gateway: GatewayOptions

    func run() async throws {
        let isFile = FileManager.default.fileExists(atPath: original)
        let id = isFile ? try Self.jobID(ofResult: original) : original
        let client = try gateway.client
        let doc: [String: Any]
        do { doc = try await client.send(.POST, "/build/\(id)/rebuild", body: options.body, contentType: "application/json") } catch let e as CLIError
            where e.description.contains("answered 404") || e.description.contains("answered 410")
        {
            guard isFile else { throw CLIError("this farm does not hold job \(id): give its result tarball to rebuild it from its provenance") }
            try await rebuildElsewhere(original, client: client)
            return
        }
        guard let job = doc["job_id"] as? String, let nonce = doc["nonce"] as? String else { throw CLIError("the gateway's answer has no job_id") }
        print("job \(job) rebuilds \(id); nonce \(nonce)")
        try await FollowedJob(client: client, id: job, nonce: nonce).finish(options) { output in
            let original = FileManager.default.fileExists(atPath: self.original) ? " --original \(self.original)" : ""
            print("check the comparison: kiln verify \(output) --nonce \(nonce) --rebuilt\(original)")
        }
    }

    /// The job id in a result's manifest (read through the hostile-archive rules).
    static func jobID(ofResult path: String) throws -> String {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-rebuild-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let root = try VerifyCommand.unpacked(path, into: scratch)
        guard let bytes = try? ConfinedDirectory(path: root).openFile("manifest.json", maxBytes: 16 << 20).readAll(),
            let manifest = try? JSONDecoder().decode(Manifest.self, from: Data(bytes))
        else { throw CLIError("\(path) is not a Kiln result (no readable manifest.json)") }
        return manifest.jobID
    }
}

struct ListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List your jobs, newest first.")
    @Option(help: "Only jobs in this status (waiting, building, ready, error, cancelled).") var status: String?
    @Option(help: "At most this many (1-200).") var limit = 50
    @OptionGroup var gateway: GatewayOptions

    func run() async throws {
        var query = "?limit=\(limit)"
        if let status { query += "&status=\(status)" }
        let doc = try await gateway.client.send(.GET, "/builds" + query)
        let builds = doc["builds"] as? [[String: Any]] ?? []
        print("JOB                    STATUS     PHASE    CREATED                       LINEAGE")
        for b in builds {
            func field(_ key: String) -> String { b[key] as? String ?? "-" }
            var lineage = ""
            if let r = b["retry_of_build_id"] as? String { lineage = "retry of \(r)" }
            if let r = b["rebuild_of_build_id"] as? String {
                let reproduced = (b["comparison"] as? [String: Any])?["reproducible"] as? Bool
                lineage = "rebuild of \(r)" + (reproduced.map { $0 ? " (reproduced)" : " (NOT reproduced)" } ?? "")
            }
            print(
                [
                    field("job_id").padding(toLength: 22, withPad: " ", startingAt: 0), field("status").padding(toLength: 10, withPad: " ", startingAt: 0),
                    field("phase").padding(toLength: 8, withPad: " ", startingAt: 0), field("created_at").padding(toLength: 29, withPad: " ", startingAt: 0), lineage,
                ]
                .joined(separator: " "))
        }
        if builds.isEmpty { print("(no jobs)") }
    }
}

/// A job just started from another: follow it and fetch its result when asked.
struct FollowedJob {
    let client: GatewayClient
    let id: String
    let nonce: String

    func finish(_ options: FollowOptions, afterDownload: (String) -> Void = { _ in }) async throws {
        guard options.follow else {
            print("follow it with: kiln events \(id)")
            return
        }
        let terminal = try await EventPrinter(client: client).follow(id)
        guard terminal == "done" else { throw ExitCode(1) }
        let output = options.output ?? "\(id).tar.gz"
        let size = try await client.download(id, to: output)
        print("result \(output) (\(size) bytes)")
        afterDownload(output)
    }
}
