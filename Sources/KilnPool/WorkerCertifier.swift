import Foundation
import KilnAttestation
import KilnBus
import KilnCore
import KilnMessages

/// The pool's half of #19 item 3: it holds the farm key (outside every VM) and certifies, once per
/// worker it launched, the key that worker made in memory. The request must come over the bus from
/// that worker's own bus identity, so no other worker, and nothing that merely knows an id, can get a
/// key certified. On kiln-broker that identity is the sender stamp (`kiln-sender: worker:<id>`, from
/// the per-worker credential the pool minted); on nats-server, which stamps nothing, it is the subject:
/// the pool minted the worker a NATS user that alone may publish on `kiln.worker.<id>.certify`, and
/// nats-server enforces that.
public struct WorkerCertifier: Sendable {
    /// What proves which worker sent a certification request.
    public enum SenderProof: Sendable, Equatable {
        /// kiln-broker's stamp, from the worker's own credential.
        case brokerStamp
        /// The subject alone: a nats-server whose every login is a user Kiln minted (`kiln keys nats`,
        /// the pool's per-worker users), where only worker `<id>` may publish on its certify subject.
        /// A `kiln-sender` header on such a bus is whatever the publisher wrote, and is not read.
        case subjectOnNATSWithKilnAccounts
    }

    public struct Configuration: Sendable {
        public var farmKey: SigningKey
        /// What every certificate says the worker booted (`image.json` of `cluster/vm/build-image.sh`).
        public var image: [ResourceDescriptor]
        /// Long enough for boot, one build and its delivery; no longer.
        public var lifetime: Duration
        public var senderProof: SenderProof

        public init(
            farmKey: SigningKey, image: [ResourceDescriptor] = [], lifetime: Duration = .seconds(3 * 3600), senderProof: SenderProof = .brokerStamp
        ) {
            self.farmKey = farmKey
            self.image = image
            self.lifetime = lifetime
            self.senderProof = senderProof
        }
    }

    /// Why a request was refused (said to the worker and logged by the pool).
    public struct Refusal: Error, Sendable, Equatable, CustomStringConvertible {
        public let description: String
        init(_ d: String) { description = d }
    }

    public let configuration: Configuration

    public init(configuration: Configuration) { self.configuration = configuration }

    /// The worker id and key a certification request names, if the request is well-formed, comes
    /// from that worker's own bus identity and asks for the answer on that worker's own inbox (an
    /// answer elsewhere would put the pool's words on a subject of the requester's choosing).
    public func check(subject: String, sender: String?, reply: String?, payload: [UInt8]) -> Result<(workerID: String, key: PublicKey), Refusal> {
        let tokens = subject.split(separator: ".", omittingEmptySubsequences: false)
        guard tokens.count == 4, tokens[0] == "kiln", tokens[1] == "worker", tokens[3] == "certify", Subject.isValidWorkerID(String(tokens[2])) else {
            return .failure(Refusal("not a certification subject: \(subject)"))
        }
        let id = String(tokens[2])
        if configuration.senderProof == .brokerStamp, sender != WorkerCredential.identity(of: id) {
            return .failure(Refusal("the request for worker \(id) does not come from that worker's bus identity (sender \(sender ?? "not stamped"))"))
        }
        guard let reply, BusRoles.isInbox(reply, ofWorker: id) else {
            return .failure(Refusal("the request for worker \(id) asks for its answer outside that worker's inbox (\(reply ?? "no reply subject"))"))
        }
        guard payload.count <= 4096, let request = try? JSONDecoder().decode(WorkerCertificateRequest.self, from: Data(payload)) else {
            return .failure(Refusal("the certification request is not valid JSON"))
        }
        guard request.workerID == id else { return .failure(Refusal("the request names worker \(request.workerID) on worker \(id)'s subject")) }
        guard let key = try? PublicKey(text: request.publicKey), key.hex == request.publicKey.lowercased() else {
            return .failure(Refusal("public_key is not the hex of an Ed25519 public key"))
        }
        return .success((id, key))
    }

    /// Where the pool may answer a request on `subject`: its `reply`, only when that is the inbox of the
    /// worker the subject names; nil otherwise (the request is refused, counted and not answered).
    public static func answerSubject(for subject: String, reply: String?) -> String? {
        let tokens = subject.split(separator: ".", omittingEmptySubsequences: false)
        guard tokens.count == 4, let reply, BusRoles.isInbox(reply, ofWorker: tokens[2]) else { return nil }
        return reply
    }

    /// The certificate for `key`, valid from a minute ago (hosts' clocks differ a little) for `lifetime`.
    public func issue(workerID: String, key: PublicKey, now: Date = Date()) throws -> DSSEEnvelope {
        let certificate = WorkerCertificate(
            workerID: workerID, publicKey: key, issuer: configuration.farmKey.publicKey, image: configuration.image,
            notBefore: now.addingTimeInterval(-60), notAfter: now.addingTimeInterval(Double(configuration.lifetime.components.seconds)))
        return try certificate.issue(with: configuration.farmKey)
    }

    /// The image parts named by `image.json` (written by `cluster/vm/build-image.sh`).
    public static func image(manifest path: String) throws -> [ResourceDescriptor] {
        struct Manifest: Decodable { var parts: [ResourceDescriptor] }
        guard let data = FileManager.default.contents(atPath: path) else { throw Refusal("cannot read the VM image manifest \(path)") }
        let parts: [ResourceDescriptor]
        do { parts = try JSONDecoder().decode(Manifest.self, from: data).parts } catch {
            throw Refusal("\(path) is not an image.json from build-image.sh: \(error)")
        }
        guard !parts.isEmpty, parts.allSatisfy({ $0.name != nil && ($0.digest?["sha256"]).flatMap(Hex.decode)?.count == 32 }) else {
            throw Refusal("\(path): every image part needs a name and a sha256")
        }
        return parts
    }
}
