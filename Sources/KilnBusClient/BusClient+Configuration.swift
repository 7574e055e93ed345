import Foundation
import KilnBus
import NIOCore
import NIOSSL

extension BusClient {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        /// Shown in the broker's logs.
        public var name: String?
        public var token: String?
        public var user: String?
        public var password: String?
        /// A NATS user's JWT and key (a `.creds` file): the login for a nats-server in operator mode,
        /// whose user permissions it enforces (Kiln's minted workers, `kiln keys nats`).
        public var natsCredentials: NATSUserCredentials?
        public var connectTimeout: TimeAmount
        public var reconnect: Bool
        public var reconnectInitialDelay: TimeAmount
        public var reconnectMaxDelay: TimeAmount
        /// Give up (and close) after this many failed attempts in a row; nil retries until `close()`.
        public var maxReconnectAttempts: Int?
        /// Publishers wait while more than this many bytes are queued (also bounds the reconnect buffer).
        public var pendingLimit: Int
        /// Inboxes live under `_INBOX.<namespace>.` (a worker uses its id, which its credential permits).
        public var inboxNamespace: String?
        /// TLS to the broker (`kilns://` or `tls://`); nil is plain TCP.
        public var tls: TLS?
        /// Which wire protocol the broker speaks: Kiln bus v1 (kiln-broker) or NATS (nats-server, #15).
        public var wireProtocol: WireProtocol = .kiln
        /// Every broker to try, in order, the first being `host`/`port`: a NATS URL may list a cluster's
        /// members (`nats://a:4222,nats://b:4222`); a lost connection reconnects to the next one.
        public var servers: [Server] = []

        public enum WireProtocol: String, Sendable, Equatable { case kiln, nats }

        public struct Server: Sendable, Equatable {
            public var host: String
            public var port: Int
        }

        /// `servers`, or the one `host`/`port` names.
        var members: [Server] { servers.isEmpty ? [Server(host: host, port: port)] : servers }

        /// How to check the broker and, for mTLS, who this client is.
        public struct TLS: Sendable, Equatable {
            /// CA (PEM) the broker's certificate must chain to; nil uses the system's trust store.
            public var caFile: String?
            /// Client certificate chain and key (PEM) for brokers that require one.
            public var certificateFile: String?
            public var keyFile: String?

            public init(caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil) {
                self.caFile = caFile
                self.certificateFile = certificateFile
                self.keyFile = keyFile
            }

            func makeContext() throws -> NIOSSLContext {
                var config = TLSConfiguration.makeClientConfiguration()
                config.minimumTLSVersion = .tlsv12
                if let caFile { config.trustRoots = .file(caFile) }
                if let certificateFile, let keyFile {
                    config.certificateChain = try NIOSSLCertificate.fromPEMFile(certificateFile).map { .certificate($0) }
                    config.privateKey = .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem))
                }
                return try NIOSSLContext(configuration: config)
            }
        }

        public init(
            host: String = "127.0.0.1", port: Int = 4222, name: String? = nil, token: String? = nil,
            user: String? = nil, password: String? = nil, connectTimeout: TimeAmount = .seconds(5),
            reconnect: Bool = true, reconnectInitialDelay: TimeAmount = .milliseconds(50),
            reconnectMaxDelay: TimeAmount = .seconds(2), maxReconnectAttempts: Int? = nil,
            pendingLimit: Int = 8 << 20
        ) {
            self.host = host
            self.port = port
            self.name = name
            self.token = token
            self.user = user
            self.password = password
            self.connectTimeout = connectTimeout
            self.reconnect = reconnect
            self.reconnectInitialDelay = reconnectInitialDelay
            self.reconnectMaxDelay = reconnectMaxDelay
            self.maxReconnectAttempts = maxReconnectAttempts
            self.pendingLimit = pendingLimit
        }

        /// Parses `kiln://[user:password@]host:port` (also `tcp://`; `kilns://` and `tls://` for TLS), a
        /// bare `host:port`, or `token@host:port`; a `?token=…` query sets the token. `nats://` speaks the
        /// NATS protocol to a nats-server, and may list several members separated by commas.
        /// IPv6 hosts go in brackets (`kiln://[::1]:4222`).
        public init(url: String) throws(BusClientError) {
            let urls = url.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            guard urls.count > 1 else {
                try self.init(singleURL: url)
                return
            }
            try self.init(singleURL: urls[0])
            var servers = [Server(host: host, port: port)]
            for other in urls.dropFirst() {
                let member = try Configuration(singleURL: other)
                guard member.wireProtocol == wireProtocol, member.tls == tls else {
                    throw BusClientError.connectFailed("bad broker URL '\(url)': every member must use the same scheme")
                }
                servers.append(Server(host: member.host, port: member.port))
            }
            self.servers = servers
        }

        init(singleURL url: String) throws(BusClientError) {
            self.init()
            let bad = { (why: String) in BusClientError.connectFailed("bad broker URL '\(url)': \(why)") }
            let text = url.contains("://") ? url : "kiln://" + url
            guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased() else {
                throw bad("expected kiln://host:port")
            }
            switch scheme {
            case "kiln", "tcp": tls = nil
            case "nats": wireProtocol = .nats
            case "nats+tls":
                // nats-server's own TLS: the greeting in plain text, then the client upgrades.
                wireProtocol = .nats
                tls = TLS()
            case "kilns", "tls": tls = TLS()
            default: throw bad("unknown scheme '\(scheme)' (kiln, kilns, tcp, tls, nats or nats+tls)")
            }
            guard var host = components.percentEncodedHost, !host.isEmpty else { throw bad("empty host") }
            if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            guard let port = components.port, port > 0, port < 65536 else { throw bad("expected kiln://host:port") }
            guard components.path.isEmpty || components.path == "/" else { throw bad("a broker URL has no path") }
            self.host = host
            self.port = port
            if let user = components.user {
                if let password = components.password {
                    self.user = user
                    self.password = password
                } else {
                    token = user
                }
            }
            if let t = components.queryItems?.first(where: { $0.name == "token" })?.value { token = t }
        }
    }

}
