import Foundation
import KilnBus
import KilnBusClient
import KilnCore
import KilnMessages

extension WorkerPool {
    /// Answers one certification request: a worker this pool launched, still booting, asking from its
    /// own bus identity, gets its key certified — once. Everything else is refused, counted and logged.
    func certify(_ message: BusMessage, now: Date = Date()) -> WorkerCertificateReply {
        guard let settings = configuration.certifier else { return WorkerCertificateReply(error: "this pool certifies no keys") }
        let certifier = WorkerCertifier(configuration: settings)
        let outcome = certifier.check(
            subject: message.subject, sender: message.headers?[BusHeader.senderHeader], reply: message.reply, payload: message.payloadBytes
        )
        .flatMap { request -> Result<String, WorkerCertifier.Refusal> in
            let claimed = state.withLockedValue { s -> String? in
                guard let w = s.workers[request.workerID] else { return "this pool did not launch worker \(request.workerID) (or it has exited)" }
                guard !w.certified else { return "worker \(request.workerID)'s key is already certified" }
                guard w.state == .starting else { return "worker \(request.workerID) has already announced itself" }
                s.workers[request.workerID]?.certified = true
                return nil
            }
            if let claimed { return .failure(.init(claimed)) }
            do {
                let envelope = try certifier.issue(workerID: request.workerID, key: request.key, now: now)
                logger.info("certified the worker's key", metadata: ["worker_id": "\(request.workerID)", "key": "\(request.key.keyID)"])
                return .success(Base64.encode(Array(try JSONEncoder().encode(envelope))))
            } catch {
                return .failure(.init("cannot sign the certificate: \(error)"))
            }
        }
        switch outcome {
        case .success(let certificate):
            metrics.certificatesIssued.increment()
            return WorkerCertificateReply(certificate: certificate)
        case .failure(let refusal):
            metrics.certificatesRefused.increment()
            logger.warning("refused to certify a key: \(refusal)", metadata: ["subject": "\(message.subject)"])
            return WorkerCertificateReply(error: refusal.description)
        }
    }
}
