import Crypto
import Foundation
import KilnAttestation
import KilnBus
import KilnCore
import KilnJobs
import NIOConcurrencyHelpers

/// Who is calling the HTTP API.
public struct Principal: Sendable, Equatable {
    public enum Role: String, Sendable, Codable {
        /// Submits; sees, follows, downloads and cancels its own jobs only.
        case user
        /// Everything, plus farm-wide listings.
        case admin
    }

    public var name: String
    public var role: Role

    public init(name: String, role: Role) {
        self.name = name
        self.role = role
    }

    /// With no tokens configured (a local `make run` on loopback) every caller is this.
    public static let local = Principal(name: "local", role: .admin)

    public func mayAccess(_ job: Job) -> Bool { role == .admin || job.triggeredBy == name }
}

/// Bearer tokens → principals. Tokens are kept only as SHA-256 digests and compared in constant
/// time against every entry. The tokens file is re-read when it changes, so a revoked token is
/// refused from the next request on.
///
/// Tokens file (JSON): `{"principals": [{"name": "alice", "role": "user", "token_sha256": "<64 hex>"}]}`
/// (`printf %s TOKEN | sha256sum` prints the digest). `KILN_TOKENS` / `--token`: comma-separated
/// `name:role:token` entries; a bare `token` is an admin named "admin".
public final class PrincipalDirectory: Sendable {
    struct Entry: Sendable {
        var digest: [UInt8]
        var principal: Principal
    }

    struct FileFormat: Codable {
        struct Item: Codable {
            var name: String
            var role: Principal.Role
            var tokenSha256: String

            enum CodingKeys: String, CodingKey {
                case name, role
                case tokenSha256 = "token_sha256"
            }
        }
        var principals: [Item]
    }

    private let fixed: [Entry]
    private let file: String?
    private let fromFile = NIOLockedValueBox<(mtime: timespec?, entries: [Entry])>((nil, []))

    public init(tokens: [String], file: String?) throws {
        fixed = try tokens.map(Self.parse)
        self.file = file
        if file != nil { try reloadIfChanged(force: true) }
    }

    /// No tokens anywhere: the gateway is open (and must stay on loopback).
    public var isOpen: Bool { fixed.isEmpty && file == nil }

    public func principal(forBearer token: String) -> Principal? {
        // Only a forced reload throws; a changed file that cannot be read admits nobody from it.
        try? reloadIfChanged(force: false)
        let presented = Array(SHA256.hash(data: Array(token.utf8)))
        var match: Principal?
        for entry in fixed + fromFile.withLockedValue({ $0.entries }) where ConstantTime.equals(entry.digest, presented) {
            match = entry.principal
        }
        return match
    }

    static func parse(_ text: String) throws -> Entry {
        let parts = text.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
        if parts.count == 3, let role = Principal.Role(rawValue: parts[1]), !parts[0].isEmpty, !parts[2].isEmpty {
            return Entry(digest: Array(SHA256.hash(data: Array(parts[2].utf8))), principal: Principal(name: parts[0], role: role))
        }
        guard !text.isEmpty, !text.contains(":") else {
            throw GatewayError(.badRequest, "a token entry is name:role:token (role user or admin) or a bare admin token")
        }
        return Entry(digest: Array(SHA256.hash(data: Array(text.utf8))), principal: Principal(name: "admin", role: .admin))
    }

    private func reloadIfChanged(force: Bool) throws {
        guard let file else { return }
        var st = stat()
        guard stat(file, &st) == 0 else {
            // A tokens file that disappeared revokes everything in it.
            fromFile.withLockedValue { $0 = (nil, []) }
            if force { throw GatewayError(.badRequest, "cannot read tokens file \(file)") }
            return
        }
        let changed = fromFile.withLockedValue { $0.mtime.map { $0.tv_sec != st.st_mtim.tv_sec || $0.tv_nsec != st.st_mtim.tv_nsec } ?? true }
        guard force || changed else { return }
        guard let data = FileManager.default.contents(atPath: file), let parsed = try? JSONDecoder().decode(FileFormat.self, from: data) else {
            fromFile.withLockedValue { $0 = (st.st_mtim, []) }  // unreadable: nobody from it gets in
            if force { throw GatewayError(.badRequest, "tokens file \(file) is not valid JSON of principals") }
            return
        }
        // Malformed entries are skipped: they admit nobody.
        let entries = parsed.principals.compactMap { item -> Entry? in
            guard item.tokenSha256.utf8.count == 64, let digest = Hex.decode(item.tokenSha256) else { return nil }
            return Entry(digest: digest, principal: Principal(name: item.name, role: item.role))
        }
        fromFile.withLockedValue { $0 = (st.st_mtim, entries) }
    }
}
