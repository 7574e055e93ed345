import Foundation
import KilnJobs
import KilnMessages
import Testing

@testable import KilnCoordination
@testable import KilnGateway

/// `DispatchOffer`, the coordinator's dispatch part, without a bus: where a job is offered and what
/// every kind of answer makes the coordinator do.
@Suite struct DispatchOfferTests {
    let t0 = Date(timeIntervalSince1970: 1_796_205_600)

    static func answer(_ reply: DispatchReply) -> [UInt8] { Array(try! JSONEncoder().encode(reply)) }

    @Test func aJobIsOfferedToTheQueueGroupToAWorkerThatCanOrNowhere() {
        var workers = WorkerDirectory()
        let plain = JobRequirements()
        let network = JobRequirements(buildConfig: BuildConfig(internetAccess: true), buildOptions: nil)
        #expect(DispatchOffer.route(plain, workers: workers, now: t0) == .anyWorker)
        #expect(DispatchOffer.route(network, workers: workers, now: t0) == .deferred, "no announcement yet: the gateway just started")
        let limits = BuildConfig(vcpus: 2, memoryMiB: 8192, diskMB: 10240, timeoutSeconds: 1800)
        workers.announced(WorkerReady(workerID: "w1", toolchains: ["cargo"], arch: "x86_64", targets: [], internetAccess: false, limits: limits), at: t0)
        guard case .impossible(let failure) = DispatchOffer.route(network, workers: workers, now: t0) else {
            Issue.record("a farm whose workers have no network cannot take the job")
            return
        }
        #expect(failure.phase == "dispatch" && failure.retryable == false && failure.message.contains("internet_access"), "\(failure)")
        workers.announced(WorkerReady(workerID: "w2", toolchains: ["cargo"], arch: "x86_64", targets: [], internetAccess: true, limits: limits), at: t0)
        #expect(DispatchOffer.route(network, workers: workers, now: t0) == .worker("w2"))
        workers.busy("w2")
        #expect(DispatchOffer.route(network, workers: workers, now: t0) == .deferred, "such a worker was seen: wait for the next")
    }

    struct Case: CustomTestStringConvertible, Sendable {
        let name: String
        let reply: DispatchOffer.Reply
        let chosen: String?
        let outcome: DispatchOffer.Outcome
        let actions: [DispatchOffer.Action]
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(
            name: "accepted, unstamped", reply: .answered(payload: answer(.accept(workerID: "w1")), stamp: nil), chosen: nil, outcome: .placed,
            actions: [.accept(worker: "w1", identity: "worker:w1")]),
        Case(
            name: "accepted, stamped by the broker", reply: .answered(payload: answer(.accept(workerID: "w1")), stamp: "worker:w1"), chosen: "w1",
            outcome: .placed, actions: [.accept(worker: "w1", identity: "worker:w1")]),
        Case(
            name: "accepted by a development worker with a shared login", reply: .answered(payload: answer(.accept(workerID: "w1")), stamp: "dev"),
            chosen: nil, outcome: .placed, actions: [.accept(worker: "w1", identity: "dev")]),
        Case(name: "empty queue group", reply: .noResponders, chosen: nil, outcome: .noTaker, actions: []),
        Case(name: "the chosen worker is gone", reply: .noResponders, chosen: "w2", outcome: .placed, actions: [.workerUnavailable("w2")]),
        Case(name: "no answer in time", reply: .noAnswer, chosen: nil, outcome: .noTaker, actions: [.countUnanswered]),
        Case(
            name: "no answer in time from the chosen worker", reply: .noAnswer, chosen: "w2", outcome: .noTaker,
            actions: [.countUnanswered, .workerUnavailable("w2"), .stopWorker("w2")]),
        Case(
            name: "not JSON", reply: .answered(payload: Array("nope".utf8), stamp: nil), chosen: nil, outcome: .placed,
            actions: [.rejectReply(.unreadable)]),
        Case(
            name: "busy", reply: .answered(payload: answer(.alreadyBusy(workerID: "w2")), stamp: nil), chosen: "w2", outcome: .placed,
            actions: [.workerUnavailable("w2")]),
        Case(
            name: "a malformed request", reply: .answered(payload: answer(DispatchReply(accepted: false, workerID: "w1", code: 400, message: "bad")), stamp: nil),
            chosen: nil, outcome: .placed,
            actions: [.failUndispatchable(JobFailure(phase: "dispatch", message: "a worker rejected the request: bad", retryable: false))]),
        Case(
            name: "accepted under a worker id that is no subject token", reply: .answered(payload: answer(.accept(workerID: "w1.>")), stamp: nil),
            chosen: nil, outcome: .placed, actions: []),
        // Hostile: a worker (its credential leaked, or compromised) accepts a job under another worker's
        // name. Recorded, the job would name an innocent worker while the impostor builds it.
        Case(
            name: "accepted under another worker's name", reply: .answered(payload: answer(.accept(workerID: "w1")), stamp: "worker:evil"),
            chosen: nil, outcome: .placed, actions: [.rejectReply(.wrongSender(stamp: "worker:evil", claimed: "w1")), .stopWorker("evil")]),
        Case(
            name: "the chosen worker accepts under another's name", reply: .answered(payload: answer(.accept(workerID: "w1")), stamp: "worker:w2"),
            chosen: "w2", outcome: .placed,
            actions: [.rejectReply(.wrongSender(stamp: "worker:w2", claimed: "w1")), .stopWorker("w2"), .workerUnavailable("w2")]),
    ]

    @Test(arguments: cases) func everyAnswerSettlesTheOffer(_ c: Case) {
        let (outcome, actions) = DispatchOffer.settle(c.reply, chosen: c.chosen)
        #expect(outcome == c.outcome)
        #expect(actions == c.actions)
    }
}
