/// The JSON a gateway serves at `GET /keys`: the public keys that sign evidence, so clients can verify.
///
/// `{"keys": [{"keyid": "<hex sha256 of raw key>", "algorithm": "ed25519", "public_key": "<hex>", "pem": "-----BEGIN PUBLIC KEY-----…"}]}`
public struct KeySet: Codable, Sendable, Equatable {
    public struct Key: Codable, Sendable, Equatable {
        public var keyid: String
        public var algorithm: String
        public var publicKey: String
        public var pem: String

        enum CodingKeys: String, CodingKey {
            case keyid, algorithm, pem
            case publicKey = "public_key"
        }

        public init(_ key: PublicKey) {
            keyid = key.keyID
            algorithm = "ed25519"
            publicKey = key.hex
            pem = key.pemRepresentation
        }
    }

    public var keys: [Key]

    public init(_ keys: [PublicKey]) { self.keys = keys.map(Key.init) }

    /// The keys, each checked: its keyid must match its bytes.
    public func publicKeys() throws -> [PublicKey] {
        try keys.map { entry in
            let key = try PublicKey(text: entry.publicKey)
            guard key.keyID == entry.keyid else { throw KeyError("key \(entry.keyid) does not match its public key bytes") }
            return key
        }
    }
}
