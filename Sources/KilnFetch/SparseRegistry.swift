import AsyncHTTPClient
import Foundation
import KilnMessages
import NIOCore
import NIOHTTP1

/// A Cargo registry spoken over the sparse HTTP protocol (RFC 2789, what crates.io serves at
/// `https://index.crates.io/`): `config.json` names where crates are downloaded, and one index file per
/// crate lists its versions as JSON lines. The fetch service talks to exactly two hosts here — the index's
/// and the one its `config.json` names for downloads — and to nothing else.
///
/// Everything read is bounded (index files, crates) and nothing downloaded is trusted: crates are
/// checked against `Cargo.lock` by the caller, index lines must name the locked version and checksum.
public struct SparseRegistry: Sendable {
    /// The index URL as configured (`sparse+` prefix allowed), always ending in `/`.
    public let indexURL: String
    let http: HTTPClient
    public var maxIndexBytes = 16 << 20
    public var maxCrateBytes = 256 << 20
    public var timeout: TimeAmount = .seconds(60)

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        /// A network problem (worth retrying), as opposed to an answer (a 404, a bad config).
        public var retryable: Bool
        /// The registry's HTTP status when it answered with an error.
        public var status: UInt? = nil
    }

    public init(url: String, http: HTTPClient) throws(Failure) {
        var s = url.hasPrefix("sparse+") ? String(url.dropFirst(7)) : url
        if !s.hasSuffix("/") { s += "/" }
        guard let parsed = URL(string: s), ["http", "https"].contains(parsed.scheme ?? ""), parsed.host != nil else {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: url, isDirectory: &isDirectory), isDirectory.boolValue {
                throw Failure(
                    description:
                        "the Cargo registry '\(url)' is a directory, not a sparse index URL: a directory of crates (a local registry, `cargo vendor` output, Debian's /usr/share/cargo/registry) is given to kiln-worker --cargo-vendor",
                    retryable: false)
            }
            throw Failure(description: "the Cargo registry '\(url)' is not an http(s) sparse index URL", retryable: false)
        }
        indexURL = s
        self.http = http
    }

    static func indexPath(_ name: String) -> String { FetchNames.indexPath(name) }

    /// The download URL template from `config.json`.
    public func downloadTemplate() async throws(Failure) -> String {
        let bytes = try await get(indexURL + "config.json", limit: 1 << 16, what: "the registry's config.json")
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any], let dl = object["dl"] as? String,
            let url = URL(string: dl.replacingOccurrences(of: "{", with: "").replacingOccurrences(of: "}", with: "")),
            ["http", "https"].contains(url.scheme ?? "")
        else {
            throw Failure(description: "the registry's config.json at \(indexURL) has no http(s) 'dl'", retryable: false)
        }
        return dl
    }

    /// The index line of `name` `version`, checked to name that version with `checksum`.
    public func indexLine(name: String, version: String, checksum: String) async throws(Failure) -> String {
        let bytes = try await get(indexURL + Self.indexPath(name), limit: maxIndexBytes, what: "the index entry of \(name)")
        for line in bytes.split(separator: UInt8(ascii: "\n")) {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any],
                object["vers"] as? String == version, object["name"] as? String == name
            else { continue }
            guard object["cksum"] as? String == checksum else {
                throw Failure(description: "the registry lists \(name) \(version) with another checksum than Cargo.lock pins", retryable: false)
            }
            return String(decoding: line, as: UTF8.self)
        }
        throw Failure(description: "the registry has no \(name) \(version)", retryable: false, status: 404)
    }

    /// A crate's whole index file, or nil when the registry has no such crate (404/410): what a lock
    /// file is resolved from (`RegistryIndexRelay`). Only a valid crate name reaches a URL.
    public func indexFile(_ name: String) async throws(Failure) -> [UInt8]? {
        guard FetchNames.isValidCrateName(name) else { throw Failure(description: "'\(name)' is not a crate name", retryable: false) }
        do {
            return try await get(indexURL + Self.indexPath(name), limit: maxIndexBytes, what: "the index entry of \(name)")
        } catch  where error.status == 404 || error.status == 410 {
            return nil
        }
    }

    /// Downloads a crate file (the caller checks its digest).
    public func download(name: String, version: String, checksum: String, template: String) async throws(Failure) -> [UInt8] {
        var url = template
        let markers = ["{crate}", "{version}", "{prefix}", "{lowerprefix}", "{sha256-checksum}"]
        if markers.contains(where: template.contains) {
            let prefix = Self.indexPath(name).split(separator: "/").dropLast().joined(separator: "/")
            url = url.replacingOccurrences(of: "{crate}", with: name).replacingOccurrences(of: "{version}", with: version)
                .replacingOccurrences(of: "{prefix}", with: prefix).replacingOccurrences(of: "{lowerprefix}", with: prefix.lowercased())
                .replacingOccurrences(of: "{sha256-checksum}", with: checksum)
        } else {
            url = (url.hasSuffix("/") ? url : url + "/") + name + "/" + version + "/download"
        }
        return try await get(url, limit: maxCrateBytes, what: "\(name) \(version)")
    }

    private func get(_ url: String, limit: Int, what: String) async throws(Failure) -> [UInt8] {
        let response: HTTPClientResponse
        do {
            var request = HTTPClientRequest(url: url)
            request.headers.add(name: "User-Agent", value: "kiln-fetch")
            response = try await http.execute(request, timeout: timeout)
        } catch {
            throw Failure(description: "cannot reach the Cargo registry for \(what) (\(url)): \(error)", retryable: true)
        }
        guard response.status == .ok else {
            // 404/410: the registry does not have it; 5xx/429: it may later.
            let transient = response.status.code >= 500 || response.status == .tooManyRequests
            throw Failure(
                description: "the Cargo registry answered \(response.status.code) for \(what) (\(url))", retryable: transient,
                status: response.status.code)
        }
        do {
            let body = try await response.body.collect(upTo: limit)
            return Array(body.readableBytesView)
        } catch {
            throw Failure(description: "\(what) from the Cargo registry is larger than \(limit) bytes or broke off: \(error)", retryable: true)
        }
    }
}
