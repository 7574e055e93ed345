import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// The web dashboard (#17): plain HTML, CSS and JavaScript modules compiled into the gateway, served
/// under `/ui/`. It is a client of the public API like any other (same principals, same tokens); these
/// files hold no data. Each is served with a strong ETag and `Cache-Control: no-cache` (a browser
/// revalidates and gets 304 until the gateway is upgraded), a content security policy that allows
/// only this origin, and `nosniff`.
struct DashboardAssets: Sendable {
    struct Asset: Sendable {
        let bytes: [UInt8]
        let contentType: String
        let etag: String
    }

    let assets: [String: Asset]

    init() {
        func asset(_ bytes: [UInt8], _ type: String) -> Asset {
            Asset(bytes: bytes, contentType: type, etag: "\"" + SHA256.hash(data: bytes).prefix(16).map { String(format: "%02x", $0) }.joined() + "\"")
        }
        assets = [
            "index.html": asset(PackageResources.index_html, "text/html; charset=utf-8"),
            "dashboard.js": asset(PackageResources.dashboard_js, "text/javascript; charset=utf-8"),
            "verify.js": asset(PackageResources.verify_js, "text/javascript; charset=utf-8"),
            "dashboard.css": asset(PackageResources.dashboard_css, "text/css; charset=utf-8"),
        ]
    }

    static let securityPolicy = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"

    /// The file `name` (`index.html` for the directory itself), or 304 when the client's copy is current.
    func response(_ name: String, ifNoneMatch: String?) -> Response? {
        guard let asset = assets[name] else { return nil }
        var headers: HTTPFields = [
            .contentType: asset.contentType, .eTag: asset.etag, .cacheControl: "no-cache",
            .contentSecurityPolicy: Self.securityPolicy, HTTPField.Name("X-Content-Type-Options")!: "nosniff",
            HTTPField.Name("Referrer-Policy")!: "no-referrer",
        ]
        if let ifNoneMatch, ifNoneMatch.split(separator: ",").contains(where: { $0.trimmingCharacters(in: .whitespaces) == asset.etag }) {
            headers[.contentType] = nil
            return Response(status: .notModified, headers: headers)
        }
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: asset.bytes)))
    }
}
