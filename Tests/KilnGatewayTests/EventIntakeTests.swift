import Foundation
import KilnJobs
import KilnMessages
import Testing

@testable import KilnCoordination
@testable import KilnGateway

/// `EventIntake`, the coordinator's event part, without a store, a bus or a clock: which events take
/// the hot path, what the full path decides for each event against each stored job, and that its
/// tables stay bounded.
@Suite struct EventIntakeTests {
    static let t0 = ContinuousClock.now

    static func job(_ status: Job.Status, worker: String? = "w1", identity: String? = "worker:w1") -> Job {
        var j = Job(id: "j1", nonce: "n", request: "{}", position: 1, queuedAt: Date(timeIntervalSince1970: 1_800_000_000), sourceDigest: nil)
        j.status = status
        if status != .waiting {
            j.workerID = worker
            j.workerIdentity = identity
        }
        return j
    }

    static func event(_ kind: BuildEvent.Kind, seq: Int, worker: String? = "w1", job: String = "j1") -> BuildEvent {
        var e = BuildEvent(jobID: job, seq: seq, type: kind, time: Date(timeIntervalSince1970: 1_800_000_000))
        e.workerID = worker
        return e
    }

    struct Case: CustomTestStringConvertible, Sendable {
        let status: Job.Status
        let kind: BuildEvent.Kind
        let seq: Int
        let worker: String?
        let expected: EventIntake.Decision
        var testDescription: String { "\(kind.rawValue) #\(seq) from \(worker ?? "nobody") to a \(status.rawValue) job (last 5) → \(expected)" }
    }

    /// The last stored seq is 5 in every case.
    static let cases: [Case] = [
        // The next event from the job's worker goes to the lifecycle.
        Case(status: .building, kind: .log, seq: 6, worker: "w1", expected: .apply(done: false)),
        Case(status: .building, kind: .failed, seq: 6, worker: "w1", expected: .apply(done: false)),
        Case(status: .building, kind: .done, seq: 6, worker: "w1", expected: .apply(done: true)),
        // Duplicates: a terminal one of an ended job is acknowledged again, anything else ignored.
        Case(status: .ready, kind: .done, seq: 5, worker: "w1", expected: .acknowledge(seq: 5, worker: "w1")),
        Case(status: .error, kind: .failed, seq: 4, worker: "w1", expected: .acknowledge(seq: 4, worker: "w1")),
        Case(status: .building, kind: .done, seq: 5, worker: "w1", expected: .ignore),
        Case(status: .building, kind: .log, seq: 3, worker: "w1", expected: .ignore),
        Case(status: .ready, kind: .log, seq: 2, worker: "w1", expected: .ignore),
        // A gap: a replay request from the first missing seq.
        Case(status: .building, kind: .log, seq: 9, worker: "w1", expected: .requestReplay(fromSeq: 6, worker: "w1")),
        // In sequence, but the job has ended: nothing changes it — except the very event it ended
        // with, whose store failed (so it was not acknowledged): stored now, then acknowledged.
        Case(status: .cancelled, kind: .log, seq: 6, worker: "w1", expected: .ignore),
        Case(status: .ready, kind: .done, seq: 6, worker: "w1", expected: .storeAndAcknowledge(seq: 6, worker: "w1")),
        Case(status: .error, kind: .failed, seq: 6, worker: "w1", expected: .storeAndAcknowledge(seq: 6, worker: "w1")),
        Case(status: .cancelled, kind: .cancelled, seq: 6, worker: "w1", expected: .storeAndAcknowledge(seq: 6, worker: "w1")),
        Case(status: .cancelled, kind: .done, seq: 6, worker: "w1", expected: .ignore),
        Case(status: .error, kind: .done, seq: 6, worker: "w1", expected: .ignore),
        // Another worker: told to stop, unless the job waits (the next offer settles it).
        Case(status: .building, kind: .log, seq: 6, worker: "w2", expected: .stopWorker("w2")),
        Case(status: .ready, kind: .done, seq: 6, worker: "w2", expected: .stopWorker("w2")),
        Case(status: .waiting, kind: .log, seq: 6, worker: "w2", expected: .ignore),
        Case(status: .building, kind: .log, seq: 6, worker: nil, expected: .ignore),
    ]

    @Test(arguments: cases) func theFullPathDecides(_ c: Case) {
        var intake = EventIntake()
        let decision = intake.decide(Self.event(c.kind, seq: c.seq, worker: c.worker), job: Self.job(c.status), lastStoredSeq: 5, now: Self.t0)
        #expect(decision == c.expected)
    }

    @Test func aGapIsAskedAboutOnceARelayIntervalPerJob() {
        var intake = EventIntake(replayInterval: .seconds(1))
        let job = Self.job(.building)
        let gap = Self.event(.log, seq: 9)
        #expect(intake.decide(gap, job: job, lastStoredSeq: 5, now: Self.t0) == .requestReplay(fromSeq: 6, worker: "w1"))
        #expect(intake.decide(gap, job: job, lastStoredSeq: 5, now: Self.t0 + .milliseconds(500)) == .awaitReplay)
        #expect(intake.decide(gap, job: job, lastStoredSeq: 7, now: Self.t0 + .milliseconds(1001)) == .requestReplay(fromSeq: 8, worker: "w1"))
    }

    @Test func eventsFlowOnTheHotPathOnlyFromTheJobsWorkerInSequence() {
        var intake = EventIntake()
        let always: (String?) -> Bool = { _ in true }
        #expect(!intake.isHotPath(Self.event(.log, seq: 1), fromJobsIdentity: always), "unknown job: the full path")
        // The acceptance settles the job as building: its next events may skip the store read.
        intake.settled(Self.event(.accepted, seq: 1), job: Self.job(.building), refused: false)
        #expect(intake.running["j1"] == .init(worker: "w1", identity: "worker:w1", lastSeq: 1))
        #expect(intake.isHotPath(Self.event(.log, seq: 2), fromJobsIdentity: always))
        #expect(intake.isHotPath(Self.event(.artifact, seq: 2), fromJobsIdentity: always))
        #expect(!intake.isHotPath(Self.event(.log, seq: 3), fromJobsIdentity: always), "out of sequence")
        #expect(!intake.isHotPath(Self.event(.log, seq: 2, worker: "w2"), fromJobsIdentity: always), "another worker")
        #expect(!intake.isHotPath(Self.event(.done, seq: 2), fromJobsIdentity: always), "terminal events need the lifecycle")
        #expect(!intake.isHotPath(Self.event(.log, seq: 2), fromJobsIdentity: { $0 != "worker:w1" }), "another sender")
        var identities: [String?] = []
        _ = intake.isHotPath(
            Self.event(.log, seq: 2),
            fromJobsIdentity: {
                identities.append($0)
                return true
            })
        #expect(identities == ["worker:w1"], "the sender is checked against the identity bound at acceptance")
        intake.storedOnTheHotPath(Self.event(.log, seq: 2))
        #expect(intake.isHotPath(Self.event(.log, seq: 3), fromJobsIdentity: always))
        intake.forget("j1")
        #expect(!intake.isHotPath(Self.event(.log, seq: 3), fromJobsIdentity: always))
    }

    @Test(arguments: [
        (Job.Status.building, BuildEvent.Kind.log, false, true),
        (.building, .log, true, false),  // refused by the lifecycle
        (.building, .failed, false, false),  // a terminal event (another attempt follows, or the end)
        (.waiting, .failed, false, false),  // the attempt ended, the job waits for another
        (.ready, .done, false, false),
    ])
    func onlyABuildingJobWithANonTerminalEventFlowsOn(status: Job.Status, kind: BuildEvent.Kind, refused: Bool, flows: Bool) {
        var intake = EventIntake()
        intake.settled(Self.event(.accepted, seq: 1), job: Self.job(.building), refused: false)
        intake.settled(Self.event(kind, seq: 2), job: Self.job(status), refused: refused)
        #expect(intake.isRunning("j1") == flows)
    }

    /// Hostile: a worker (or many) sending gaps for ever many jobs must not grow the gateway's memory.
    @Test func theReplayTableIsBounded() {
        var intake = EventIntake(maxTracked: 100)
        for n in 0..<10_000 {
            var job = Self.job(.building)
            job.id = "j\(n)"
            _ = intake.decide(Self.event(.log, seq: 9, job: job.id), job: job, lastStoredSeq: 5, now: Self.t0)
        }
        #expect(intake.lastReplay.count <= 100)
        // An ended job leaves it.
        var job = Self.job(.building)
        job.id = "j9999"
        job.status = .ready
        intake.settled(Self.event(.done, seq: 6, job: "j9999"), job: job, refused: false)
        #expect(intake.lastReplay["j9999"] == nil)
    }
}
