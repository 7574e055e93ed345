import Foundation
import KilnArchive

/// Linux configfs-tsm (Documentation/ABI/testing/configfs-tsm): create a report entry, write the
/// 64-byte `inblob`, read `outblob` (the signed SEV-SNP report or TDX quote), `provider` and
/// `auxblob`, and check `generation` to be sure no other writer touched the entry in between.
///
/// `root` is configurable so tests can drive it against a fake tree. The kernel updates `generation`
/// synchronously on every attribute write; the provider tolerates a short delay so that a user-space
/// fake can play the kernel's part.
public struct TSMEvidenceProvider: EvidenceProvider {
    public static let defaultRoot = "/sys/kernel/config/tsm/report"
    public let root: String
    /// How long to wait for the entry's attributes / generation update (only a fake ever needs it).
    public let settleTimeout: TimeInterval

    public init(root: String = TSMEvidenceProvider.defaultRoot, settleTimeout: TimeInterval = 5) {
        self.root = root
        self.settleTimeout = settleTimeout
    }

    /// Unknown until a report is taken; the provider name tells.
    public var tee: String { "tsm" }

    public func report(reportData: [UInt8]) throws -> EvidenceReport {
        guard reportData.count == 64 else { throw TSMError("report_data must be 64 bytes, got \(reportData.count)") }
        let entry = root + "/kiln-\(getpid())-\(UUID().uuidString.prefix(8).lowercased())"
        guard mkdir(entry, 0o700) == 0 else { throw TSMError("cannot create \(entry): \(String(cString: strerror(errno)))") }
        defer { Self.removeEntry(entry) }

        let before = try waitForGeneration(entry) { _ in true }
        try write(Data(reportData), to: entry + "/inblob")
        let afterWrite = try waitForGeneration(entry) { $0 != before }
        guard afterWrite == before + 1 else {
            throw TSMError("configfs-tsm generation jumped from \(before) to \(afterWrite): another writer raced us")
        }
        let outblob = try read(entry + "/outblob")
        guard !outblob.isEmpty else { throw TSMError("configfs-tsm returned an empty outblob") }
        let provider = String(decoding: try read(entry + "/provider"), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        // The auxblob is optional (TDX has none); absent, the evidence carries none.
        let aux = try? read(entry + "/auxblob")
        let afterRead = try readGeneration(entry)
        guard afterRead == afterWrite else {
            throw TSMError("configfs-tsm generation changed while reading the report (\(afterWrite) → \(afterRead))")
        }
        return EvidenceReport(
            tee: Self.teeName(provider: provider), provider: provider, report: Array(outblob),
            aux: (aux?.isEmpty ?? true) ? nil : Array(aux!))
    }

    /// configfs removes an entry with its attributes on rmdir. A fake tree on an ordinary file system
    /// refuses (ENOTEMPTY); only then are the files removed first.
    static func removeEntry(_ entry: String) {
        if rmdir(entry) == 0 { return }
        if errno == ENOTEMPTY, let names = try? FileManager.default.contentsOfDirectory(atPath: entry) {
            for n in names { unlink(entry + "/" + n) }
            rmdir(entry)
        }
    }

    /// Maps the kernel's provider name to Kiln's tee label.
    public static func teeName(provider: String) -> String {
        switch provider {
        case "sev_guest", "sev-guest": "sev-snp"
        case "tdx_guest", "tdx-guest": "tdx"
        default: provider
        }
    }

    private func readGeneration(_ entry: String) throws -> Int {
        let text = String(decoding: try read(entry + "/generation"), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard let g = Int(text) else { throw TSMError("configfs-tsm generation is not a number: '\(text)'") }
        return g
    }

    private func waitForGeneration(_ entry: String, until accept: (Int) -> Bool) throws -> Int {
        let deadline = Date().addingTimeInterval(settleTimeout)
        var lastError: (any Error)?
        repeat {
            do {
                let g = try readGeneration(entry)
                if accept(g) { return g }
            } catch { lastError = error }
            usleep(1000)
        } while Date() < deadline
        throw lastError ?? TSMError("configfs-tsm generation did not change after writing inblob")
    }

    private func read(_ path: String) throws -> Data {
        guard let data = KernelFile.read(path) else { throw TSMError("cannot read \(path)") }
        return data
    }

    private func write(_ data: Data, to path: String) throws {
        guard let fh = FileHandle(forWritingAtPath: path) else { throw TSMError("cannot open \(path)") }
        defer { try? fh.close() }
        try fh.write(contentsOf: data)
    }
}

public struct TSMError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ d: String) { description = d }
}
