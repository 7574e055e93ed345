import Foundation
import KilnArchive
import KilnAttestation
import MultipartKit
import NIOCore

/// A validated `POST /build`: exactly one source, a good nonce. Parsing never trusts the input; every
/// rejection says what to fix.
public struct BuildSubmission: Sendable {
    public var nonce: String
    public var repoURL: String?
    public var repoRef: String?
    public var archive: [UInt8]?
    public var sourceName: String?

    struct JSONBody: Decodable {
        var nonce: String?
        var repo_url: String?
        var repo_ref: String?
        var source_data: String?
        var source_name: String?
    }

    /// The parts of a multipart body by field name (MultipartKit's streaming parser does the parsing).
    struct FormPart {
        var headers: [(String, String)] = []
        var body = ByteBuffer()
        var name: String? { disposition.flatMap { BuildSubmission.parameter("name", in: $0) } }
        var filename: String? { disposition.flatMap { BuildSubmission.parameter("filename", in: $0) } }
        var disposition: String? { headers.first { $0.0.lowercased() == "content-disposition" }?.1 }
        var text: String { String(buffer: body) }
    }

    public static func parse(contentType: String?, body: ByteBuffer) throws -> BuildSubmission {
        let type = (contentType ?? "").lowercased()
        if type.hasPrefix("application/json") || type.isEmpty && body.readableBytes > 0 && body.getInteger(at: body.readerIndex, as: UInt8.self) == UInt8(ascii: "{") {
            return try parseJSON(body)
        }
        if type.hasPrefix("multipart/form-data") {
            return try parseMultipart(contentType: contentType ?? "", body: body)
        }
        throw GatewayError(.unsupportedMediaType, "Content-Type must be application/json or multipart/form-data (got '\(contentType ?? "none")')")
    }

    static func parseJSON(_ body: ByteBuffer) throws -> BuildSubmission {
        let data = Data(body.readableBytesView)
        let json: JSONBody
        do { json = try JSONDecoder().decode(JSONBody.self, from: data) } catch let DecodingError.typeMismatch(_, ctx) where ctx.codingPath.isEmpty {
            throw GatewayError.badRequest("the JSON body must be an object")
        } catch let DecodingError.typeMismatch(_, ctx) {
            throw GatewayError.badRequest("field '\(ctx.codingPath.map(\.stringValue).joined(separator: "."))' must be a string")
        } catch DecodingError.dataCorrupted {
            throw GatewayError.badRequest("the body is not valid JSON")
        } catch {
            throw GatewayError.badRequest("the JSON body does not match {nonce, repo_url, repo_ref} or {nonce, source_data, source_name}")
        }
        var archive: [UInt8]?
        if let data = json.source_data {
            guard let bytes = Base64.decode(data) else { throw GatewayError.badRequest("source_data is not valid base64") }
            archive = bytes
        }
        return try validated(nonce: json.nonce, repoURL: json.repo_url, repoRef: json.repo_ref, archive: archive, sourceName: json.source_name)
    }

    static func parseMultipart(contentType: String, body: ByteBuffer) throws -> BuildSubmission {
        guard let boundary = contentType.split(separator: ";").map({ $0.trimmingCharacters(in: .whitespaces) })
                .first(where: { $0.lowercased().hasPrefix("boundary=") })
                .map({ String($0.dropFirst("boundary=".count)).trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }),
              !boundary.isEmpty else {
            throw GatewayError.badRequest("multipart/form-data needs a boundary parameter in Content-Type")
        }
        var parts: [FormPart] = []
        var current = FormPart()
        let parser = MultipartParser(boundary: boundary)
        parser.onHeader = { current.headers.append(($0, $1)) }
        parser.onBody = { current.body.writeBuffer(&$0) }
        parser.onPartComplete = {
            parts.append(current)
            current = FormPart()
        }
        do { try parser.execute(body) } catch {
            throw GatewayError.badRequest("the multipart body could not be parsed (\(error)); check the boundary")
        }
        func field(_ name: String) -> FormPart? { parts.first { $0.name == name } }
        let source = field("source")
        if source == nil && field("repo_url") == nil {
            throw GatewayError.badRequest("multipart upload needs a 'source' file part (ZIP or tar.gz) or 'repo_url' and 'ref'")
        }
        let archive = source.map { Array($0.body.readableBytesView) }
        let name = field("source_name")?.text ?? source?.filename
        return try validated(nonce: field("nonce")?.text, repoURL: field("repo_url")?.text, repoRef: field("ref")?.text ?? field("repo_ref")?.text,
                             archive: archive, sourceName: name)
    }

    /// `name="value"` out of a Content-Disposition header.
    static func parameter(_ key: String, in header: String) -> String? {
        for piece in header.split(separator: ";") {
            let kv = piece.trimmingCharacters(in: .whitespaces)
            if kv.lowercased().hasPrefix(key + "=") {
                return String(kv.dropFirst(key.count + 1)).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
            }
        }
        return nil
    }

    static func validated(nonce: String?, repoURL: String?, repoRef: String?, archive: [UInt8]?, sourceName: String?) throws -> BuildSubmission {
        guard let nonce, !nonce.isEmpty else { throw GatewayError.badRequest("nonce is missing: send 2 to 32 hex characters (up to 16 bytes)") }
        let normalized: String
        switch Nonce.validate(nonce) {
        case .success(let n): normalized = n
        case .failure(let e): throw GatewayError.badRequest(e.description)
        }
        switch (repoURL, archive) {
        case (nil, nil): throw GatewayError.badRequest("send either repo_url (with repo_ref) or source_data, not neither")
        case (.some, .some): throw GatewayError.badRequest("send either repo_url or source_data, not both")
        case (.some(let url), nil):
            try validateRepositoryURL(url)
            if let ref = repoRef, ref.isEmpty || ref.hasPrefix("-") || ref.contains("..") || !ref.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) {
                throw GatewayError.badRequest("repo_ref '\(ref)' is not a valid branch, tag or commit")
            }
            return BuildSubmission(nonce: normalized, repoURL: url, repoRef: repoRef ?? "HEAD", archive: nil, sourceName: nil)
        case (nil, .some(let bytes)):
            guard !bytes.isEmpty else { throw GatewayError.badRequest("the source archive is empty") }
            guard bytes.starts(with: [0x50, 0x4B]) || bytes.starts(with: [0x1F, 0x8B]) else {
                throw GatewayError.badRequest("the source must be a ZIP or a gzip-compressed tar archive")
            }
            if let name = sourceName, name.count > 255 || name.contains("/") {
                throw GatewayError.badRequest("source_name must be a plain file name of at most 255 characters")
            }
            return BuildSubmission(nonce: normalized, repoURL: nil, repoRef: nil, archive: bytes, sourceName: sourceName)
        }
    }

    /// https, http and git only: no file:// or local paths (the worker's disk), no ssh (its keys), no credentials.
    static func validateRepositoryURL(_ url: String) throws {
        let lower = url.lowercased()
        guard let schemeEnd = lower.range(of: "://") else {
            throw GatewayError.badRequest("repo_url '\(url)' is not a URL; local paths are not allowed (use https://, http:// or git://)")
        }
        let scheme = String(lower[..<schemeEnd.lowerBound])
        guard ["https", "http", "git"].contains(scheme) else {
            throw GatewayError.badRequest("repo_url scheme '\(scheme)' is not allowed; use https, http or git")
        }
        let authority = url[schemeEnd.upperBound...].prefix { $0 != "/" }
        guard !authority.isEmpty else { throw GatewayError.badRequest("repo_url has no host") }
        guard !authority.contains("@") else { throw GatewayError.badRequest("repo_url must not embed credentials (user:password@)") }
        guard url.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { throw GatewayError.badRequest("repo_url contains spaces or control characters") }
    }
}
