import Logging
import Metrics
import PostgresNIO
import Synchronization

/// PostgreSQL connections for `PostgresJobStore`, with a deadline on every operation.
///
/// Why: with postgres-nio 1.33.2, a query in flight on a connection the server closes (a restart, a
/// failover) can wait for ever and ignores cancellation; each one also keeps its pool slot, so a few
/// restarts leave a pool where every query waits (`PostgresPoolTests` reproduces both). A gateway
/// must not stop ingesting because its database blinked. So each operation runs in a task of its own
/// and the caller waits at most `operationTimeout`: past it the caller gets `JobStoreError`, and the
/// pool — whose slots may be held by such queries — is replaced by a fresh one. Operations already
/// on the old pool finish or fail there; one that never does only costs its task.
final class PostgresPool: Sendable {
    private struct Current {
        var client: PostgresClient
        var runner: Task<Void, Never>
        var generation: Int
    }

    let operationTimeout: Duration
    private let configuration: PostgresClient.Configuration
    private let logger: Logger
    private let current: Mutex<Current>
    private let timeouts = Counter(label: "kiln_gateway_database_timeouts_total")
    private let replacements = Counter(label: "kiln_gateway_database_pools_replaced_total")

    init(configuration: PostgresClient.Configuration, operationTimeout: Duration, logger: Logger) {
        self.configuration = configuration
        self.operationTimeout = operationTimeout
        self.logger = logger
        current = Mutex(Self.start(configuration, generation: 0))
    }

    /// The pool's run loop is unstructured on purpose: a pool is replaced while the gateway runs, and
    /// the replaced one's loop is cancelled here (`replace`, `shutdown`), not by a parent task.
    private static func start(_ configuration: PostgresClient.Configuration, generation: Int) -> Current {
        let client = PostgresClient(configuration: configuration)
        return Current(client: client, runner: Task { await client.run() }, generation: generation)
    }

    /// At shutdown: the current pool's connections close.
    func shutdown() { current.withLock { $0.runner.cancel() } }

    func withConnection<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        try await supervised { client in try await client.withConnection { try await body($0) } }
    }

    /// `timeout` overrides `operationTimeout` for work that may legitimately take longer (migrations,
    /// which also wait for another gateway migrating).
    func withTransaction<T: Sendable>(
        timeout: Duration? = nil, _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) async throws -> T {
        let logger = self.logger
        return try await supervised(timeout: timeout) { client in try await client.withTransaction(logger: logger) { try await body($0) } }
    }

    private func supervised<T: Sendable>(
        timeout: Duration? = nil, _ operation: @escaping @Sendable (PostgresClient) async throws -> T
    ) async throws -> T {
        let (client, generation) = current.withLock { ($0.client, $0.generation) }
        let outcome = Outcome<T>()
        let timeout = timeout ?? operationTimeout
        // Both tasks end on their own: the timer when the operation finishes or the deadline passes, the
        // operation when postgres-nio lets it (see the type's comment for why it cannot be a child).
        let timer = Task { [self] in
            guard (try? await Task.sleep(for: timeout)) != nil else { return }
            if outcome.resolve(.failure(JobStoreError("PostgreSQL did not answer within \(timeout); the gateway reconnects"))) {
                timeouts.increment()
                replace(generation: generation)
            }
        }
        let work = Task {
            do {
                outcome.resolve(.success(try await operation(client)))
            } catch {
                outcome.resolve(.failure(error))
            }
            timer.cancel()
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { outcome.wait($0) }
        } onCancel: {
            outcome.resolve(.failure(CancellationError()))
            work.cancel()
            timer.cancel()
        }
    }

    /// A fresh pool in place of generation `generation`'s (once, however many operations timed out on it).
    private func replace(generation: Int) {
        let old: Current? = current.withLock { state in
            guard state.generation == generation else { return nil }
            let old = state
            state = Self.start(configuration, generation: generation + 1)
            return old
        }
        guard let old else { return }
        old.runner.cancel()
        replacements.increment()
        logger.warning("PostgreSQL did not answer within \(operationTimeout); connecting a fresh pool (generation \(generation + 1))")
    }
}

/// One operation's result, delivered once to one waiting caller whichever comes first: the result,
/// the deadline or the caller's cancellation.
private final class Outcome<T: Sendable>: Sendable {
    private struct State {
        var result: Result<T, any Error>?
        var waiter: CheckedContinuation<T, any Error>?
    }
    private let state = Mutex(State())

    /// True when this settled the outcome (nothing else had).
    @discardableResult
    func resolve(_ result: Result<T, any Error>) -> Bool {
        let (settled, waiter) = state.withLock { s -> (Bool, CheckedContinuation<T, any Error>?) in
            if s.result != nil { return (false, nil) }
            s.result = result
            defer { s.waiter = nil }
            return (true, s.waiter)
        }
        waiter?.resume(with: result)
        return settled
    }

    func wait(_ continuation: CheckedContinuation<T, any Error>) {
        let ready: Result<T, any Error>? = state.withLock { s in
            if let r = s.result { return r }
            s.waiter = continuation
            return nil
        }
        if let ready { continuation.resume(with: ready) }
    }
}
