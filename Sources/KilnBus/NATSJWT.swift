import Crypto
import Foundation
import KilnCore

/// NATS's decentralised auth, the parts Kiln needs to run its own accounts: JWTs for an operator, one
/// account and its users (https://docs.nats.io/running-a-nats-service/configuration/securing_nats/jwt),
/// each `base64url(header).base64url(claims).base64url(Ed25519 signature)` signed by the issuer's nkey.
/// nats-server checks the chain (operator → account → user) and enforces each user's `pub`/`sub`
/// permissions itself, so a worker's minted user can publish only on its own id's subjects.
public enum NATSJWT {
    /// Subjects a user may publish or subscribe to; `deny` wins over `allow`, and answers to the
    /// requests it received (`responses`, at most that many per request) pass either way.
    public struct Permissions: Sendable, Equatable {
        public var publishAllow: [String] = []
        public var publishDeny: [String] = []
        public var subscribeAllow: [String] = []
        public var subscribeDeny: [String] = []
        public var responses: Int?

        public init(publishAllow: [String] = [], publishDeny: [String] = [], subscribeAllow: [String] = [], subscribeDeny: [String] = [], responses: Int? = nil) {
            self.publishAllow = publishAllow
            self.publishDeny = publishDeny
            self.subscribeAllow = subscribeAllow
            self.subscribeDeny = subscribeDeny
            self.responses = responses
        }
    }

    struct Header: Encodable {
        var typ = "JWT"
        var alg = "ed25519-nkey"
    }

    struct Claims<Body: Encodable>: Encodable {
        var jti: String
        var iat: Int64
        var exp: Int64?
        var iss: String
        var name: String
        var sub: String
        var nats: Body
    }

    struct OperatorBody: Encodable {
        var type = "operator"
        var version = 2
    }

    struct AccountBody: Encodable {
        struct Limits: Encodable {
            // -1: no limit. (An absent limit is zero, which would admit no connection.)
            var subs = -1, data = -1, payload = -1, imports = -1, exports = -1, conn = -1, leaf = -1
            var wildcards = true
        }
        var limits = Limits()
        var type = "account"
        var version = 2
    }

    struct Permission: Encodable {
        var allow: [String]?
        var deny: [String]?
    }

    struct ResponsePermission: Encodable {
        var max: Int
        var ttl: Int64 = 0
    }

    struct UserBody: Encodable {
        var pub: Permission
        var sub: Permission
        var resp: ResponsePermission?
        var subs = -1, data = -1, payload = -1
        var type = "user"
        var version = 2
    }

    /// A self-signed operator JWT: the root nats-server is configured to trust.
    public static func `operator`(_ key: NATSKey, name: String, now: Int64) throws -> String {
        precondition(key.role == .operator)
        return try sign(Claims(jti: "", iat: now, iss: key.publicKey, name: name, sub: key.publicKey, nats: OperatorBody()), with: key)
    }

    /// An account JWT, signed by the operator.
    public static func account(_ account: String, name: String, signedBy operatorKey: NATSKey, now: Int64) throws -> String {
        precondition(operatorKey.role == .operator)
        return try sign(Claims(jti: "", iat: now, iss: operatorKey.publicKey, name: name, sub: account, nats: AccountBody()), with: operatorKey)
    }

    /// A user JWT under `accountKey`, with its permissions and (for a worker) an expiry.
    public static func user(_ user: String, name: String, permissions p: Permissions, expires: Int64?, signedBy accountKey: NATSKey, now: Int64) throws -> String {
        precondition(accountKey.role == .account)
        let body = UserBody(
            pub: Permission(allow: p.publishAllow.nilIfEmpty, deny: p.publishDeny.nilIfEmpty),
            sub: Permission(allow: p.subscribeAllow.nilIfEmpty, deny: p.subscribeDeny.nilIfEmpty),
            resp: p.responses.map { ResponsePermission(max: $0) })
        return try sign(Claims(jti: "", iat: now, exp: expires, iss: accountKey.publicKey, name: name, sub: user, nats: body), with: accountKey)
    }

    static func sign<Body: Encodable>(_ claims: Claims<Body>, with key: NATSKey) throws -> String {
        var claims = claims
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        // The id is a digest of the claims without it, as the NATS tools make it.
        claims.jti = Base32.encode(Array(SHA256.hash(data: try encoder.encode(claims))))
        let head = Base64.encodeURLSafe(Array(try encoder.encode(Header()))) + "." + Base64.encodeURLSafe(Array(try encoder.encode(claims)))
        return head + "." + Base64.encodeURLSafe(try key.sign(Array(head.utf8)))
    }
}

/// A NATS user's login: its JWT and the seed that proves it holds the JWT's key (by signing the
/// server's nonce). Written and read in the `.creds` text every NATS tool uses.
public struct NATSUserCredentials: Sendable {
    public var jwt: String
    public var key: NATSKey

    public init(jwt: String, key: NATSKey) {
        self.jwt = jwt
        self.key = key
    }

    public static func isCredsText(_ text: String) -> Bool { text.contains("BEGIN NATS USER JWT") }

    /// Reads `.creds` text: the line after `BEGIN NATS USER JWT` and the one after `BEGIN USER NKEY SEED`.
    public init(creds text: String) throws(BusError) {
        guard text.utf8.count <= 16 << 10 else { throw .authorizationRequired("NATS credentials larger than 16 KiB") }
        let lines = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        func after(_ marker: String) -> String? {
            guard let i = lines.firstIndex(where: { $0.hasPrefix("-") && $0.contains(marker) }), i + 1 < lines.count else { return nil }
            return lines[i + 1]
        }
        guard let jwt = after("BEGIN NATS USER JWT"), jwt.split(separator: ".").count == 3, let seed = after("BEGIN USER NKEY SEED") else {
            throw .authorizationRequired("not NATS user credentials (a .creds file)")
        }
        let key = try NATSKey(seed: seed)
        guard key.role == .user else { throw .authorizationRequired("the NATS credentials' seed is not a user's") }
        self.init(jwt: jwt, key: key)
    }

    public var credsText: String {
        """
        -----BEGIN NATS USER JWT-----
        \(jwt)
        ------END NATS USER JWT------

        ************************* IMPORTANT *************************
        NKEY Seed printed below can be used to sign and prove identity.
        NKEYs are sensitive and should be treated as secrets.

        -----BEGIN USER NKEY SEED-----
        \(key.seed)
        ------END USER NKEY SEED------

        *************************************************************

        """
    }

    /// The `sig` of a `CONNECT`: the server's nonce signed with the user's key, base64url.
    public func signNonce(_ nonce: String) throws -> String { Base64.encodeURLSafe(try key.sign(Array(nonce.utf8))) }
}

extension Array {
    fileprivate var nilIfEmpty: [Element]? { isEmpty ? nil : self }
}

/// Kiln's accounts on a nats-server: one operator, one account (whose key is the operator's
/// credential key), users for the farm's roles. `kiln keys nats` writes them; kiln-pool mints workers.
public enum NATSAccountSetup {
    /// The lines a nats-server configuration includes to trust Kiln's operator and know its account.
    public static func serverConfiguration(operatorKey: NATSKey, accountKey: NATSKey, accountName: String, now: Int64) throws -> String {
        let operatorJWT = try NATSJWT.operator(operatorKey, name: "kiln", now: now)
        let accountJWT = try NATSJWT.account(accountKey.publicKey, name: accountName, signedBy: operatorKey, now: now)
        return """
            # Written by `kiln keys nats`: nats-server trusts Kiln's operator and knows its one account.
            operator: "\(operatorJWT)"
            resolver: MEMORY
            resolver_preload: {
              \(accountKey.publicKey): "\(accountJWT)"
            }

            """
    }

    /// A user of the account with a role's permissions: a fresh key, its JWT issued by the account.
    public static func user(_ rules: BusRoles.Rules, name: String, accountKey: NATSKey, expires: Int64?, now: Int64) throws -> NATSUserCredentials {
        let user = NATSKey(role: .user)
        let jwt = try NATSJWT.user(user.publicKey, name: name, permissions: BusRoles.nats(rules), expires: expires, signedBy: accountKey, now: now)
        return NATSUserCredentials(jwt: jwt, key: user)
    }
}
