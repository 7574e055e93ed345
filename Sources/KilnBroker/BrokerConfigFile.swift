import Crypto
import Foundation
import KilnBus

/// The broker's JSON config file. Every field is optional; command-line flags override it.
///
/// ```json
/// {"host": "0.0.0.0", "port": 4222, "monitor_port": 8222, "max_frame": 8388608,
///  "outbound_cap": 67108864, "ping_interval_seconds": 20, "max_pings_outstanding": 2,
///  "token": "…"   — or —   "users": [{"user": "gateway", "password": "…", "permissions": {…}}]}
/// ```
public struct BrokerConfigFile: Codable, Sendable {
    public var host: String?
    public var port: Int?
    public var monitorHost: String?
    public var monitorPort: Int?
    public var maxFrame: Int?
    public var outboundCap: Int?
    public var pingIntervalSeconds: Double?
    public var maxPingsOutstanding: Int?
    public var maxConnections: Int?
    public var maxConnectionsPerAddress: Int?
    public var handshakeTimeoutSeconds: Double?
    public var preConnectMaxFrame: Int?
    public var maxSubscriptions: Int?
    public var token: String?
    public var users: [Authenticator.User]?

    enum CodingKeys: String, CodingKey {
        case host, port, token, users
        case monitorHost = "monitor_host"
        case monitorPort = "monitor_port"
        case maxFrame = "max_frame"
        case outboundCap = "outbound_cap"
        case pingIntervalSeconds = "ping_interval_seconds"
        case maxPingsOutstanding = "max_pings_outstanding"
        case maxConnections = "max_connections"
        case maxConnectionsPerAddress = "max_connections_per_address"
        case handshakeTimeoutSeconds = "handshake_timeout_seconds"
        case preConnectMaxFrame = "pre_connect_max_frame"
        case maxSubscriptions = "max_subscriptions"
    }

    public init() {}

    /// An Ed25519 public key from a file: 64 hex characters, or a PEM `PUBLIC KEY` (SPKI).
    public static func loadCredentialKey(path: String) throws -> Curve25519.Signing.PublicKey {
        guard let data = FileManager.default.contents(atPath: path) else { throw ConfigError("cannot read credential key \(path)") }
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        var raw: [UInt8]?
        if text.count == 64 {
            raw = stride(from: 0, to: 64, by: 2).compactMap { i -> UInt8? in
                let a = text.index(text.startIndex, offsetBy: i)
                return UInt8(text[a..<text.index(a, offsetBy: 2)], radix: 16)
            }
        } else if text.hasPrefix("-----BEGIN PUBLIC KEY-----") {
            let body = text.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
            let spkiPrefix: [UInt8] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00]
            if let der = Data(base64Encoded: body).map(Array.init), der.count == 44, Array(der.prefix(12)) == spkiPrefix { raw = Array(der.suffix(32)) }
        }
        guard let raw, raw.count == 32, let key = try? Curve25519.Signing.PublicKey(rawRepresentation: raw) else {
            throw ConfigError("credential key \(path) is not an Ed25519 public key (64 hex characters or PEM)")
        }
        return key
    }

    public static func load(path: String) throws -> BrokerConfigFile {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw ConfigError("cannot read config file \(path): \(error.localizedDescription)")
        }
        let config: BrokerConfigFile
        do { config = try JSONDecoder().decode(BrokerConfigFile.self, from: data) } catch {
            throw ConfigError("config file \(path) is not valid: \(error)")
        }
        for user in config.users ?? [] {
            do { try user.permissions.validate() } catch {
                throw ConfigError("config file \(path): user '\(user.user)': \(error.message)")
            }
        }
        return config
    }

    /// Users may also live in a file of their own: `{"users": [...]}` or a bare array.
    public static func loadUsers(path: String) throws -> [Authenticator.User] {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw ConfigError("cannot read users file \(path): \(error.localizedDescription)")
        }
        struct Wrapper: Decodable { var users: [Authenticator.User] }
        let users: [Authenticator.User]
        if let w = try? JSONDecoder().decode(Wrapper.self, from: data) {
            users = w.users
        } else {
            do { users = try JSONDecoder().decode([Authenticator.User].self, from: data) } catch {
                throw ConfigError("users file \(path) is not valid: \(error)")
            }
        }
        for user in users {
            do { try user.permissions.validate() } catch {
                throw ConfigError("users file \(path): user '\(user.user)': \(error.message)")
            }
        }
        return users
    }

    public struct ConfigError: Error, CustomStringConvertible {
        public let description: String
        init(_ d: String) { description = d }
    }
}
