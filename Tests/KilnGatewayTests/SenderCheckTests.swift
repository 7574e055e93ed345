import KilnBus
import KilnBusClient
import KilnMessages
import Testing

@testable import KilnCoordination
@testable import KilnGateway

/// #29 item 4: what a worker publishes ends in its id, so the subject names the sender on either
/// transport; on kiln-broker the stamp must agree with it.
struct SenderCheckTests {
    @Test(
        arguments: [
            ("kiln.build.j1.events.w1", "w1"), ("kiln.build.j1.result.w-2", "w-2"), ("kiln.build.j1.source.w_3", "w_3"),
            ("kiln.workers.ready.w1", "w1"),
            ("kiln.build.j1.events", nil), ("kiln.build.j1.control.w1", nil), ("kiln.build.j1.events.w1.x", nil),
            ("kiln.workers.ready", nil), ("kiln.worker.w1.certify", nil), ("kiln.build.j1.events.", nil), ("other.build.j1.events.w1", nil),
        ] as [(String, String?)])
    func theSubjectNamesThePublishingWorker(subject: String, worker: String?) {
        #expect(Subjects.publishingWorker(of: subject).map(String.init) == worker)
    }

    @Test(
        arguments: [
            // (subject, stamp, identity bound at acceptance, accepted?)
            ("kiln.build.j1.events.w1", nil, "worker:w1", true),  // NATS: the subject is the proof
            ("kiln.build.j1.events.w2", nil, "worker:w1", false),  // another worker's subject
            ("kiln.build.j1.events", nil, "worker:w1", false),  // not a worker subject
            ("kiln.build.j1.events.w1", "worker:w1", "worker:w1", true),  // kiln-broker: stamp and subject agree
            ("kiln.build.j1.events.w1", "worker:w2", "worker:w1", false),  // w2's login on w1's subject
            ("kiln.build.j1.events.w2", "worker-a", "worker-a", true),  // a users-file login: its stamp is the identity
            ("kiln.build.j1.events.w2", "worker-b", "worker-a", false),
            ("kiln.build.j1.events.w9", nil, nil, true),  // a job recorded before identities were
        ] as [(String, String?, String?, Bool)])
    func aMessageMatchesTheIdentityItsJobIsBoundTo(subject: String, stamp: String?, identity: String?, accepted: Bool) {
        let message = BusMessage(subject: subject, headers: stamp.map { [BusHeader.senderHeader: $0] })
        #expect(SenderCheck.matches(message, identity: identity) == accepted)
    }

    @Test func theIdentityBoundAtAcceptanceIsTheStampOrTheWorkerID() {
        #expect(SenderCheck.identity(acceptedBy: "w1", stamp: nil) == "worker:w1")
        #expect(SenderCheck.identity(acceptedBy: "w1", stamp: "worker-a") == "worker-a")
    }
}
