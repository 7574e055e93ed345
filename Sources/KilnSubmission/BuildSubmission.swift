import Foundation
import KilnAttestation
import KilnMessages

/// A validated `POST /build`: exactly one source, a good nonce. Parsing never trusts the input; every
/// rejection says what to fix. An uploaded archive is already spooled (the gateway's
/// `SubmissionReader` streamed it through these parsers into memory or a file); only where it is, its
/// digest and size travel.
public struct BuildSubmission: Sendable {
    public var nonce: String
    public var repoURL: String?
    public var repoRef: String?
    public var archive: SpooledArchive?
    public var sourceName: String?
    public var skipCache = false
    public var buildConfig: BuildConfig?
    public var buildOptions: BuildOptions?

    /// Reads `skip_cache`, `build_config` and `build_options` (raw JSON text from the JSON body or
    /// the form) and checks them: a 400 names the field and, for resources, the farm's limit.
    public mutating func readOptions(from fields: [String: String], maxima: BuildConfig.Maxima) throws(SubmissionError) {
        func decode<T: Decodable>(_ type: T.Type, _ name: String) throws(SubmissionError) -> T? {
            guard let text = fields[name] else { return nil }
            do { return try JSONDecoder().decode(T.self, from: Data(text.utf8)) } catch {
                throw SubmissionError("\(name) is not valid: \(Self.describe(error))")
            }
        }
        skipCache = try decode(Bool.self, "skip_cache") ?? false
        if let config = try decode(BuildConfig.self, "build_config") {
            if let problem = config.violation(of: maxima) { throw SubmissionError(problem) }
            buildConfig = config
        }
        if let options = try decode(BuildOptions.self, "build_options"), !options.isEmpty {
            if let problem = options.violation() { throw SubmissionError(problem) }
            buildOptions = options
        }
    }

    static func describe(_ error: any Error) -> String {
        switch error as? DecodingError {
        case .typeMismatch(let type, let context)?:
            "\(context.codingPath.map(\.stringValue).joined(separator: ".")) must be \(type == Bool.self ? "true or false" : type == Int.self ? "an integer" : type == String.self ? "a string" : "\(type)")"
        case .dataCorrupted?: "not JSON"
        default: "\(error)"
        }
    }

    public static func validated(nonce: String?, repoURL: String?, repoRef: String?, archive: SpooledArchive?, sourceName: String?) throws(SubmissionError)
        -> BuildSubmission
    {
        guard let nonce, !nonce.isEmpty else { throw SubmissionError("nonce is missing: send 2 to 32 hex characters (up to 16 bytes)") }
        let normalized: String
        switch Nonce.validate(nonce) {
        case .success(let n): normalized = n
        case .failure(let e): throw SubmissionError(e.description)
        }
        switch (repoURL, archive) {
        case (nil, nil): throw SubmissionError("send either repo_url (with repo_ref) or source_data, not neither")
        case (.some, .some): throw SubmissionError("send either repo_url or source_data, not both")
        case (.some(let url), nil):
            try validateRepositoryURL(url)
            if let ref = repoRef, ref.isEmpty || ref.hasPrefix("-") || ref.contains("..") || !ref.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) {
                throw SubmissionError("repo_ref '\(ref)' is not a valid branch, tag or commit")
            }
            return BuildSubmission(nonce: normalized, repoURL: url, repoRef: repoRef ?? "HEAD", archive: nil, sourceName: nil)
        case (nil, .some(let archive)):
            guard archive.size > 0 else { throw SubmissionError("the source archive is empty") }
            guard archive.leadingBytes.starts(with: [0x50, 0x4B]) || archive.leadingBytes.starts(with: [0x1F, 0x8B]) else {
                throw SubmissionError("the source must be a ZIP or a gzip-compressed tar archive")
            }
            if let name = sourceName, name.count > 255 || name.contains("/") {
                throw SubmissionError("source_name must be a plain file name of at most 255 characters")
            }
            return BuildSubmission(nonce: normalized, repoURL: nil, repoRef: nil, archive: archive, sourceName: sourceName)
        }
    }

    /// https, http and git only: no file:// or local paths (the worker's disk), no ssh (its keys), no credentials.
    public static func validateRepositoryURL(_ url: String) throws(SubmissionError) {
        let lower = url.lowercased()
        guard let schemeEnd = lower.range(of: "://") else {
            throw SubmissionError("repo_url '\(url)' is not a URL; local paths are not allowed (use https://, http:// or git://)")
        }
        let scheme = String(lower[..<schemeEnd.lowerBound])
        guard ["https", "http", "git"].contains(scheme) else {
            throw SubmissionError("repo_url scheme '\(scheme)' is not allowed; use https, http or git")
        }
        let authority = url[schemeEnd.upperBound...].prefix { $0 != "/" }
        guard !authority.isEmpty else { throw SubmissionError("repo_url has no host") }
        guard !authority.contains("@") else { throw SubmissionError("repo_url must not embed credentials (user:password@)") }
        guard url.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { throw SubmissionError("repo_url contains spaces or control characters") }
    }
}

/// An uploaded source archive: small ones in memory, the rest spooled to a file under the
/// gateway's data directory (`ArchiveSpool`).
public struct SpooledArchive: Sendable {
    public enum Storage: Sendable {
        case memory([UInt8])
        case file(String)
    }
    public var storage: Storage
    /// The spool file, if the archive is in one.
    public var path: String? {
        if case .file(let p) = storage { return p }
        return nil
    }
    public var sha256: String
    public var size: Int64
    /// Its first bytes, for the format check.
    public var leadingBytes: [UInt8]

    public init(storage: Storage, sha256: String, size: Int64, leadingBytes: [UInt8]) {
        self.storage = storage
        self.sha256 = sha256
        self.size = size
        self.leadingBytes = leadingBytes
    }
}
