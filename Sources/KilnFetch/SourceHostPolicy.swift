import Foundation

/// Which repository hosts `git` may fetch from. `git` runs on the host's network, so a repository
/// URL is a way to make the farm connect somewhere: to its own loopback services, a cloud metadata
/// endpoint (169.254.169.254), or the operator's private network. Every address the host name
/// resolves to is checked; internal ones are refused unless the operator allowed the host. For HTTP
/// the checked address is pinned (`http.curloptResolve`) so a second DNS answer cannot differ, and
/// redirects are not followed. Refusals read the same whatever the target, so they reveal nothing
/// about which internal ports answer.
public struct SourceHostPolicy: Sendable {
    /// "host" or "host:port" entries the operator allowed.
    public var allowed: [String]
    /// Only the allowed hosts, nothing else (not even a public one, and without a DNS lookup): for
    /// farms that build only from their own mirrors, and for test farms that must not reach out.
    public var onlyAllowed = false

    public init(allowed: [String], onlyAllowed: Bool = false) {
        self.allowed = allowed
        self.onlyAllowed = onlyAllowed
    }

    public struct Decision: Equatable, Sendable {
        public var host: String
        public var port: Int
        /// `host:port:address` for `http.curloptResolve` (nil when the host was allowed as is).
        public var pin: String?
    }

    static func defaultPort(scheme: String) -> Int {
        switch scheme {
        case "https": 443
        case "http": 80
        default: 9418
        }
    }

    /// Host and port of an http(s)/git URL (IPv6 literals in brackets).
    static func endpoint(of url: String) -> (scheme: String, host: String, port: Int)? {
        guard let range = url.range(of: "://") else { return nil }
        let scheme = url[..<range.lowerBound].lowercased()
        let authority = url[range.upperBound...].prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        var host = Substring(authority)
        var port = defaultPort(scheme: scheme)
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return nil }
            let rest = host[host.index(after: close)...]
            host = host[host.index(after: host.startIndex)..<close]
            if rest.hasPrefix(":") {
                guard let p = Int(rest.dropFirst()), (1...65535).contains(p) else { return nil }
                port = p
            }
        } else if let colon = host.lastIndex(of: ":") {
            guard let p = Int(host[host.index(after: colon)...]), (1...65535).contains(p) else { return nil }
            port = p
            host = host[..<colon]
        }
        guard !host.isEmpty else { return nil }
        return (scheme, host.lowercased(), port)
    }

    public func check(url: String) throws(FetchRefusal) -> Decision {
        guard let (scheme, host, port) = Self.endpoint(of: url) else {
            throw FetchRefusal(.badRequest, "repo_url has no valid host and port; use a URL like https://host/owner/repo.git")
        }
        if allowed.contains(host) || allowed.contains("\(host):\(port)") {
            return Decision(host: host, port: port, pin: nil)
        }
        if onlyAllowed {
            throw FetchRefusal(.hostPolicy, "the repository host '\(host)' is not one this farm builds from; use a repository on one of the operator's allowed hosts")
        }
        let addresses = Self.resolve(host)
        guard let first = addresses.first else {
            throw FetchRefusal(.upstream, "cannot resolve the repository host '\(host)'; check the repository URL", retryable: true)
        }
        if addresses.contains(where: { Self.isInternal($0) }) {
            throw FetchRefusal(
                .hostPolicy,
                "the repository host '\(host)' resolves to a loopback, private, link-local or multicast address; the farm does not fetch from internal networks; use a public repository URL, or ask the operator to allow this host (--allow-source-host)"
            )
        }
        let literal = first.contains(":") ? "[\(first)]" : first
        return Decision(host: host, port: port, pin: scheme == "git" ? nil : "\(host):\(port):\(literal)")
    }

    /// Every address (numeric text) `getaddrinfo` gives for `host`.
    static func resolve(_ host: String) -> [String] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &res) == 0 else { return [] }
        defer { freeaddrinfo(res) }
        var out: [String] = []
        var p = res
        while let a = p {
            var buf = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(a.pointee.ai_addr, a.pointee.ai_addrlen, &buf, socklen_t(buf.count), nil, 0, NI_NUMERICHOST) == 0 {
                let s = String(decoding: buf.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if !out.contains(s) { out.append(s) }
            }
            p = a.pointee.ai_next
        }
        return out
    }

    /// Loopback, unspecified, private (RFC 1918, CGNAT, ULA), link-local, multicast, broadcast,
    /// reserved — and IPv4-mapped/compatible forms of these.
    static func isInternal(_ address: String) -> Bool {
        var v4 = in_addr()
        if inet_pton(AF_INET, address, &v4) == 1 {
            let b = withUnsafeBytes(of: v4.s_addr) { Array($0) }
            return isInternalV4(b)
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, address.split(separator: "%").first.map(String.init) ?? address, &v6) == 1 else { return true }
        let b = withUnsafeBytes(of: v6) { Array($0) }
        if b[0..<10].allSatisfy({ $0 == 0 }) && (b[10] == 0xFF && b[11] == 0xFF || b[10] == 0 && b[11] == 0) {
            if b[0..<16].allSatisfy({ $0 == 0 }) { return true }  // ::
            if b[0..<15].allSatisfy({ $0 == 0 }) && b[15] == 1 { return true }  // ::1
            return isInternalV4(Array(b[12..<16]))  // ::ffff:a.b.c.d, ::a.b.c.d
        }
        if b[0] & 0xFE == 0xFC { return true }  // fc00::/7 unique local
        if b[0] == 0xFE && b[1] & 0xC0 == 0x80 { return true }  // fe80::/10 link-local
        if b[0] == 0xFE && b[1] & 0xC0 == 0xC0 { return true }  // fec0::/10 site-local (deprecated)
        if b[0] == 0xFF { return true }  // multicast
        if b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0D && b[3] == 0xB8 { return true }  // documentation
        if b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xFF && b[3] == 0x9B { return isInternalV4(Array(b[12..<16])) }  // NAT64
        return false
    }

    static func isInternalV4(_ b: [UInt8]) -> Bool {
        switch (b[0], b[1]) {
        case (0, _), (10, _), (127, _): return true
        case (100, 64...127): return true  // CGNAT
        case (169, 254): return true  // link-local, cloud metadata
        case (172, 16...31): return true
        case (192, 168): return true
        case (192, 0) where b[2] == 0 || b[2] == 2: return true
        case (198, 18...19): return true  // benchmarking
        case (198, 51) where b[2] == 100: return true
        case (203, 0) where b[2] == 113: return true
        default: return b[0] >= 224  // multicast, reserved, broadcast
        }
    }
}
