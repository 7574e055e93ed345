import Foundation
import KilnArchive
import KilnAttestation
import KilnCore
import Testing

@Suite struct DSSETests {
    static let seed = Hex.decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")!
    static let payload = Array(
        ("{\"_type\":\"https://in-toto.io/Statement/v1\",\"subject\":[{\"name\":\"artifacts/hello\",\"digest\":{\"sha256\":\""
            + String(repeating: "0", count: 64) + "\"}}],\"predicateType\":\"https://slsa.dev/provenance/v1\",\"predicate\":{}}").utf8)

    @Test func designTestVector() throws {
        #expect(Self.payload.count == 233)
        let key = try SigningKey(seed: Self.seed)
        let envelope = try DSSEEnvelope.sign(payload: Self.payload, key: key)
        #expect(envelope.signatures.first?.sig == "OhYSfg1xIxSlzdHGRswbQLueowutKCWiAERBqH7rz55zwa3GQHqGquPhIbinkUAEXtWB+iGe7jTAIf416xSVDA==")
        #expect(envelope.signatures.first?.keyid == key.publicKey.keyID)
        #expect(key.publicKey.hex == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
        let (verifiedBy, body) = try envelope.verify(trustedKeys: [key.publicKey])
        #expect(verifiedBy == key.publicKey)
        #expect(body == Self.payload)
    }

    @Test func pae() {
        #expect(String(decoding: DSSEEnvelope.pae(payloadType: "t", payload: Array("ab".utf8)), as: UTF8.self) == "DSSEv1 1 t 2 ab")
    }

    @Test func urlSafeBase64Accepted() throws {
        let key = try SigningKey(seed: Self.seed)
        var envelope = try DSSEEnvelope.sign(payload: Self.payload, key: key)
        envelope.signatures[0].sig = envelope.signatures[0].sig.replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        envelope.payload = envelope.payload.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        _ = try envelope.verify(trustedKeys: [key.publicKey])
    }

    @Test func rejectsUnknownPayloadTypeWrongKeyAndTampering() throws {
        let key = try SigningKey(seed: Self.seed)
        let other = SigningKey()
        let envelope = try DSSEEnvelope.sign(payload: Self.payload, key: key)
        var typed = envelope
        typed.payloadType = "application/json"
        #expect(throws: VerificationError.self) { try typed.verify(trustedKeys: [key.publicKey]) }
        #expect { try envelope.verify(trustedKeys: [other.publicKey]) } throws: { ($0 as? VerificationError)?.step == .signature }
        var tampered = envelope
        var bytes = Self.payload
        bytes[10] ^= 1
        tampered.payload = Data(bytes).base64EncodedString()
        #expect(throws: VerificationError.self) { try tampered.verify(trustedKeys: [key.publicKey]) }
    }

    @Test func keyRoundTrips() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-keys-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let key = SigningKey()
        try key.write(to: dir + "/k.pem")
        let perms = try FileManager.default.attributesOfItem(atPath: dir + "/k.pem")[.posixPermissions] as? Int
        #expect(perms == 0o600)
        #expect(try SigningKey(contentsOf: dir + "/k.pem").seed == key.seed)
        try Data(key.seed).write(to: URL(fileURLWithPath: dir + "/k.raw"))
        #expect(try SigningKey(contentsOf: dir + "/k.raw").seed == key.seed)
        try key.publicKey.pemRepresentation.write(toFile: dir + "/p.pem", atomically: true, encoding: .utf8)
        #expect(try PublicKey(contentsOf: dir + "/p.pem") == key.publicKey)
        #expect(try PublicKey(text: key.publicKey.hex) == key.publicKey)
        #expect(try PublicKey(contentsOf: dir + "/k.pem") == key.publicKey)
        #expect(key.publicKey.pemRepresentation.hasPrefix("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA"))
    }

    @Test func aRandomNonceIsTheLongestValidOneAndFresh() {
        let a = Nonce.random()
        let b = Nonce.random()
        #expect(a.count == Nonce.maxBytes * 2 && (try? Nonce.validate(a).get()) == a)
        #expect(a != b)
    }

    @Test func nonceValidation() {
        #expect((try? Nonce.validate("00ff").get()) == "00ff")
        #expect((try? Nonce.validate("ABCD").get()) == "abcd")
        for bad in ["", "abc", "xyz0", String(repeating: "a", count: 34)] {
            if case .success = Nonce.validate(bad) { Issue.record("accepted \(bad)") }
        }
    }
}
