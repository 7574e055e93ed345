import Crypto
import Foundation
import KilnBus
import KilnCore

/// Decides who a `connect` frame is, and with which permissions.
public struct Authenticator: Sendable {
    public struct User: Sendable, Codable, Equatable {
        public var user: String
        public var password: String
        public var permissions: SubjectPermissions

        public init(user: String, password: String, permissions: SubjectPermissions = .unrestricted) {
            self.user = user
            self.password = password
            self.permissions = permissions
        }

        enum CodingKeys: String, CodingKey { case user, password, permissions }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            user = try c.decode(String.self, forKey: .user)
            // Optional: a user who logs in with a client certificate (mTLS) needs none.
            password = try c.decodeIfPresent(String.self, forKey: .password) ?? ""
            permissions = try c.decodeIfPresent(SubjectPermissions.self, forKey: .permissions) ?? .unrestricted
        }
    }

    public enum Mode: Sendable {
        case none
        case token(String)
        case users([User])
    }

    public let mode: Mode
    /// The operator's credential public key: connections may also log in with a `WorkerCredential`
    /// it signed, as `worker:<id>` with `SubjectPermissions.worker(id:)`.
    public let credentialKey: Curve25519.Signing.PublicKey?

    public init(_ mode: Mode, credentialKey: Curve25519.Signing.PublicKey? = nil) {
        self.mode = mode
        self.credentialKey = credentialKey
    }

    public var isRequired: Bool {
        if case .none = mode, credentialKey == nil { return false }
        return true
    }

    /// The identity a connection gets after a successful `connect`.
    public struct Identity: Sendable, Equatable {
        public var name: String?
        public var permissions: SubjectPermissions
        /// The name the broker proved (a users-file login), stamped on everything this connection
        /// publishes; nil when the name is only what the client claimed (no auth, shared token).
        public var authenticatedName: String?

        public init(name: String?, permissions: SubjectPermissions, authenticatedName: String? = nil) {
            self.name = name
            self.permissions = permissions
            self.authenticatedName = authenticatedName
        }
    }

    /// - Parameter certificateName: the common name of the client certificate the TLS layer verified
    ///   against the broker's client CA (mTLS), if any: it logs in as the user of that name.
    public func authenticate(
        _ connect: BusHeader, certificateName: String? = nil,
        now: Int64 = Int64(Date().timeIntervalSince1970)
    ) throws(BusError) -> Identity {
        if let credentialKey, let token = connect.token, token.hasPrefix(WorkerCredential.prefix) {
            let credential = try WorkerCredential.verify(token, key: credentialKey, now: now)
            return Identity(
                name: credential.identity, permissions: .worker(id: credential.workerID),
                authenticatedName: credential.identity)
        }
        switch mode {
        case .none:
            if credentialKey != nil { throw .authorizationRequired("authorization failed: this broker accepts worker credentials only") }
            return Identity(name: connect.user, permissions: .unrestricted)
        case .token(let expected):
            guard let token = connect.token else { throw .authorizationRequired("authorization failed: connect carries no token") }
            guard Authenticator.constantTimeEquals(token, expected) else { throw .authorizationRequired("authorization failed: wrong token") }
            return Identity(name: connect.name, permissions: .unrestricted)
        case .users(let users):
            if let certificateName {
                guard let match = users.first(where: { $0.user == certificateName }) else {
                    throw .authorizationRequired("authorization failed: no user '\(certificateName)' for this client certificate")
                }
                return Identity(name: match.user, permissions: match.permissions, authenticatedName: match.user)
            }
            guard let name = connect.user, let password = connect.password, !password.isEmpty else {
                throw .authorizationRequired("authorization failed: connect needs 'user' and 'password'")
            }
            // Compare against every entry so timing does not reveal which user names exist.
            var match: User?
            for u in users {
                let nameOK = Authenticator.constantTimeEquals(u.user, name)
                // A user without a password (certificate-only) never matches a password login.
                let passOK = Authenticator.constantTimeEquals(u.password, password) && !u.password.isEmpty
                if nameOK && passOK { match = u }
            }
            guard let match else { throw .authorizationRequired("authorization failed: unknown user or wrong password") }
            return Identity(name: match.user, permissions: match.permissions, authenticatedName: match.user)
        }
    }

    /// Equality whose running time does not reveal where the strings differ.
    public static func constantTimeEquals(_ a: String, _ b: String) -> Bool { ConstantTime.equals(a, b) }
}
