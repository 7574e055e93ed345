import Foundation
import KilnJobs
import Testing

@testable import KilnCoordination
@testable import KilnGateway

/// `ResultIntake`, the coordinator's result part, without a store, a bus or a disk: what each result
/// chunk means against each stored job, and that the checks run in their order (an ingesting peer's
/// job gets no answer and no counted sender rejection).
@Suite struct ResultIntakeTests {
    static let digest = String(repeating: "ab", count: 32)

    static func job(_ status: Job.Status, worker: String? = "w1", result: String? = nil) -> Job {
        var j = Job(id: "j1", nonce: "n", request: "{}", position: 1, queuedAt: Date(timeIntervalSince1970: 1_800_000_000), sourceDigest: nil)
        j.status = status
        if status != .waiting {
            j.workerID = worker
            j.workerIdentity = worker.map { "worker:\($0)" }
        }
        j.resultSha256 = result
        return j
    }

    struct Case: CustomTestStringConvertible, Sendable {
        let name: String
        let job: Job?
        let claimedWorker: String?
        var sha256 = ResultIntakeTests.digest
        var ingestedElsewhere = false
        var senderIsJobsWorker = true
        let expected: ResultIntake.Decision
        var testDescription: String { "\(name) → \(expected)" }
    }

    static let cases: [Case] = [
        Case(name: "a chunk from the building job's worker", job: job(.building), claimedWorker: "w1", expected: .write),
        Case(name: "an unknown job", job: nil, claimedWorker: "w1", expected: .unknownJob),
        Case(name: "a job another gateway ingests", job: job(.building), claimedWorker: "w1", ingestedElsewhere: true, expected: .silent),
        Case(
            name: "another gateway's job, from a foreign sender", job: job(.building), claimedWorker: "w1", ingestedElsewhere: true,
            senderIsJobsWorker: false, expected: .silent),
        Case(
            name: "a sender that is not the job's bound identity", job: job(.building), claimedWorker: "w1", senderIsJobsWorker: false, expected: .refuse(stopWorker: nil)
        ),
        Case(name: "a worker claiming a job that is another's", job: job(.building), claimedWorker: "w2", expected: .refuse(stopWorker: "w2")),
        Case(name: "a chunk naming no worker", job: job(.building), claimedWorker: nil, expected: .refuse(stopWorker: nil)),
        Case(name: "a chunk for a job still waiting", job: job(.waiting), claimedWorker: "w1", expected: .refuse(stopWorker: "w1")),
        Case(
            name: "the job's worker resending a chunk of the stored result (a slow ack)", job: job(.ready, result: digest), claimedWorker: "w1",
            expected: .acknowledgeStored),
        Case(
            name: "a ready job's worker sending a different result", job: job(.ready, result: String(repeating: "cd", count: 32)),
            claimedWorker: "w1", expected: .refuse(stopWorker: nil)),
        Case(name: "another worker resending for a ready job", job: job(.ready, result: digest), claimedWorker: "w2", expected: .refuse(stopWorker: "w2")),
        Case(name: "a failed job", job: job(.error), claimedWorker: "w1", expected: .refuse(stopWorker: nil)),
        Case(name: "a cancelled job", job: job(.cancelled), claimedWorker: "w1", expected: .refuse(stopWorker: nil)),
    ]

    @Test(arguments: cases)
    func eachChunkAgainstEachJob(_ c: Case) {
        var senderChecks = 0
        let decision = ResultIntake.decide(
            job: c.job, claimedWorker: c.claimedWorker, sha256: c.sha256, ingestedElsewhere: c.ingestedElsewhere,
            fromJobsIdentity: { _ in
                senderChecks += 1
                return c.senderIsJobsWorker
            })
        #expect(decision == c.expected)
        // The sender check counts and logs its rejections: it runs only for a job this gateway answers for.
        #expect(senderChecks == (c.job == nil || c.ingestedElsewhere ? 0 : 1))
    }
}
