import Foundation
import KilnBusClient
import KilnMessages
import NIOConcurrencyHelpers

/// Decides which request this worker takes: exactly the first valid one. Every later request — on the
/// one-shot subscription or the worker's direct subject — gets the 409 refusal and is never built.
final class AcceptanceGate: Sendable {
    enum State {
        case waiting
        case accepted(BuildRequest, reply: String?)
        case acknowledged
        case closed
    }

    enum Signal { case accepted, invalid, shutdown }

    let workerID: String
    let client: BusClient
    let gateway: GatewayIdentity
    private let state = NIOLockedValueBox<State>(.waiting)
    /// What this worker announced it can build: a request that needs more is declined (422), never
    /// accepted and failed later, even if a spoofed announcement sent it here.
    private let capabilities = NIOLockedValueBox<WorkerReady?>(nil)
    private let signals: AsyncStream<Signal>
    private let signal: AsyncStream<Signal>.Continuation
    private let subscriptions: AsyncStream<BusSubscription>
    private let newSubscription: AsyncStream<BusSubscription>.Continuation

    init(workerID: String, client: BusClient, gateway: GatewayIdentity) {
        self.workerID = workerID
        self.client = client
        self.gateway = gateway
        (signals, signal) = AsyncStream.makeStream()
        (subscriptions, newSubscription) = AsyncStream.makeStream()
    }

    /// Answers every request on every subscription handed to `startAnswering`, each in a child task,
    /// until `stop()`. The worker service runs it for its whole life: requests that arrive during the
    /// build still get their 409.
    func run() async {
        await withTaskGroup(of: Void.self) { group in
            for await subscription in subscriptions {
                group.addTask { for await message in subscription { await self.handle(message) } }
            }
            group.cancelAll()
        }
    }

    /// Sets what this worker can build (before it subscribes for work).
    func announce(_ ready: WorkerReady) {
        capabilities.withLockedValue { $0 = ready }
    }

    /// Answers every request arriving on `subscription`.
    func startAnswering(_ subscription: BusSubscription) {
        newSubscription.yield(subscription)
    }

    private func handle(_ message: BusMessage) async {
        guard gateway.mayHaveSent(message) else {
            // Not answered at all (an answer would tell the sender this worker exists and is idle); a
            // one-shot queue subscription it spent is made again.
            if message.subject == Subjects.buildRequest { signal.yield(.invalid) }
            return
        }
        // Not JSON: answered 400 below (`request == nil`).
        let request = try? JSONDecoder().decode(BuildRequest.self, from: Data(message.payloadBytes))
        enum Decision {
            case accept, refuse
            case invalid(code: Int, String)
        }
        let offers = capabilities.withLockedValue { $0 }
        let decision: Decision = state.withLockedValue { s in
            guard case .waiting = s else { return .refuse }
            guard let request else { return .invalid(code: 400, "the build request is not valid JSON") }
            guard Subjects.isValidToken(request.jobID) else { return .invalid(code: 400, "job_id '\(request.jobID)' is not a valid token") }
            if let offers {
                let unmet = JobRequirements(request).unmet(by: offers)
                if !unmet.isEmpty { return .invalid(code: 422, "worker \(workerID) cannot build this: it lacks " + unmet.joined(separator: ", ")) }
            }
            s = .accepted(request, reply: message.reply)
            return .accept
        }
        switch decision {
        case .accept:
            signal.yield(.accepted)
        case .refuse:
            if let reply = message.reply { try? await client.publish(reply, payload: Self.encode(.alreadyBusy(workerID: workerID))) }
        case .invalid(let code, let why):
            if let reply = message.reply {
                // A lost refusal: the gateway's offer times out and it offers the job elsewhere.
                try? await client.publish(reply, payload: Self.encode(DispatchReply(accepted: false, workerID: workerID, code: code, message: why)))
            }
            // Only a request from the queue group spent the one-shot subscription; one on the direct
            // subject did not, and a second one-shot would let two queue requests reach this worker.
            if message.subject == Subjects.buildRequest { signal.yield(.invalid) }
        }
    }

    /// Waits for the first valid request (nil on shutdown or idle timeout). When an invalid message
    /// spent the one-shot subscription, subscribes once more.
    func waitForRequest(idleTimeout: Duration?) async -> BuildRequest? {
        await withTaskGroup(of: Void.self, returning: BuildRequest?.self) { group in
            if let idleTimeout {
                group.addTask { if (try? await Task.sleep(for: idleTimeout)) != nil { self.shutdown() } }
            }
            defer { group.cancelAll() }
            for await s in signals {
                switch s {
                case .accepted:
                    if case .accepted(let r, _) = state.withLockedValue({ $0 }) { return r }
                case .shutdown:
                    return nil
                case .invalid:
                    if let again = try? client.subscribe(Subjects.buildRequest, queue: Subjects.workersQueue, max: 1) {
                        // The subscription is made either way; the flush only waits until the broker has it.
                        try? await client.flush()
                        startAnswering(again)
                    }
                }
            }
            return nil
        }
    }

    /// Replies `{accepted: true}` to the chosen request (after the worker subscribed to its control subject).
    func acknowledgeAccepted() async throws {
        let reply: String? = state.withLockedValue { s in
            guard case .accepted(_, let reply) = s else { return nil }
            s = .acknowledged
            return reply
        }
        if let reply { try await client.publish(reply, payload: Self.encode(.accept(workerID: workerID))) }
    }

    func shutdown() {
        let wasWaiting = state.withLockedValue { s -> Bool in
            if case .waiting = s {
                s = .closed
                return true
            }
            return false
        }
        if wasWaiting { signal.yield(.shutdown) }
    }

    func stop() {
        newSubscription.finish()
        signal.finish()
    }

    static func encode(_ reply: DispatchReply) -> [UInt8] { Array((try? JSONEncoder().encode(reply)) ?? Data()) }
}
