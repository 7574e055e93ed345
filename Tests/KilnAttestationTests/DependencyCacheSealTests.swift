import Foundation
import KilnAttestation
import KilnCore
import Testing

/// #31 item 3: when a worker takes a compiled-dependency entry — every case of `DependencyCacheSeal.open`,
/// with real keys and signatures.
@Suite struct DependencyCacheSealTests {
    static let key = String(repeating: "ab", count: 32)

    static func statement(key: String = key, worker: String = "w1", created: Date = Date()) -> DependencyCacheStatement {
        DependencyCacheStatement(
            key: key, archiveSha256: String(repeating: "cd", count: 32), archiveSize: 1234, workerID: worker, isolation: "vm-tcg", created: created, crates: 27)
    }

    static func certificate(farm: SigningKey, worker: SigningKey, id: String = "w1", from: Date = Date() - 60, until: Date = Date() + 3600) throws -> DSSEEnvelope {
        try WorkerCertificate(workerID: id, publicKey: worker.publicKey, issuer: farm.publicKey, image: [], notBefore: from, notAfter: until).issue(with: farm)
    }

    func refusal(_ seal: DependencyCacheSeal, trusted: [PublicKey], key: String = Self.key) -> String? {
        do {
            _ = try seal.open(trustedKeys: trusted, expectedKey: key)
            return nil
        } catch { return error.message }
    }

    @Test func anEntrySignedByTheFarmKeyOpens() throws {
        let farm = SigningKey()
        let seal = try DependencyCacheSeal.seal(Self.statement(), key: farm, certificate: nil)
        let (statement, trust) = try seal.open(trustedKeys: [farm.publicKey], expectedKey: Self.key)
        #expect(statement == Self.statement().with(created: statement.created))
        #expect(trust == .trustedKey(keyID: farm.publicKey.keyID))
    }

    @Test func aVMWorkersEntryOpensThroughTheFarmsCertificateOfItsKey() throws {
        let farm = SigningKey()
        let worker = SigningKey()
        let seal = try DependencyCacheSeal.seal(Self.statement(), key: worker, certificate: try Self.certificate(farm: farm, worker: worker))
        let (_, trust) = try seal.open(trustedKeys: [farm.publicKey], expectedKey: Self.key)
        #expect(trust == .certified(keyID: worker.publicKey.keyID, issuerKeyID: farm.publicKey.keyID, workerID: "w1"))
    }

    @Test(arguments: [
        "untrusted signer", "certificate by another farm", "certificate for another key", "certificate for another worker", "outside validity", "another key",
        "tampered statement", "no trusted key",
    ])
    func anEntryIsRefused(_ attack: String) throws {
        let farm = SigningKey()
        let worker = SigningKey()
        var trusted = [farm.publicKey]
        var expected = Self.key
        var seal: DependencyCacheSeal
        switch attack {
        case "untrusted signer":
            seal = try DependencyCacheSeal.seal(Self.statement(), key: SigningKey(), certificate: nil)
        case "certificate by another farm":
            seal = try DependencyCacheSeal.seal(Self.statement(), key: worker, certificate: try Self.certificate(farm: SigningKey(), worker: worker))
        case "certificate for another key":
            seal = try DependencyCacheSeal.seal(Self.statement(), key: worker, certificate: try Self.certificate(farm: farm, worker: SigningKey()))
        case "certificate for another worker":
            seal = try DependencyCacheSeal.seal(Self.statement(), key: worker, certificate: try Self.certificate(farm: farm, worker: worker, id: "w2"))
        case "outside validity":
            seal = try DependencyCacheSeal.seal(
                Self.statement(created: Date() + 7200), key: worker, certificate: try Self.certificate(farm: farm, worker: worker))
        case "another key":
            seal = try DependencyCacheSeal.seal(Self.statement(), key: farm, certificate: nil)
            expected = String(repeating: "ef", count: 32)
        case "tampered statement":
            seal = try DependencyCacheSeal.seal(Self.statement(), key: farm, certificate: nil)
            var other = Self.statement()
            other.archiveSha256 = String(repeating: "00", count: 32)
            seal.statement.payload = Base64.encode(try CanonicalJSON.encode(other))
        default:
            seal = try DependencyCacheSeal.seal(Self.statement(), key: farm, certificate: nil)
            trusted = []
        }
        #expect(refusal(seal, trusted: trusted, key: expected) != nil, "\(attack) was accepted")
    }
}

extension DependencyCacheStatement {
    fileprivate func with(created: String) -> DependencyCacheStatement {
        var copy = self
        copy.created = created
        return copy
    }
}
