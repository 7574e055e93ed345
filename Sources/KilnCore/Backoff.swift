/// Exponential backoff with up to 25 % jitter and an optional limit on attempts: the one policy
/// behind every retry loop in Kiln (the bus client's reconnects, result and source chunks over the
/// bus, the CLI's event stream). The random source is injected so tests see exact delays.
public struct Backoff: Sendable {
    public let initial: Duration
    public let maximum: Duration
    public let maxAttempts: Int?
    /// Failed attempts so far.
    public private(set) var attempts = 0
    private var delay: Duration

    public init(initial: Duration, maximum: Duration, maxAttempts: Int? = nil) {
        self.initial = max(.zero, initial)
        self.maximum = max(self.initial, maximum)
        self.maxAttempts = maxAttempts
        delay = self.initial
    }

    /// How long to wait before the next attempt: the current delay plus up to a quarter of it.
    public func nextDelay(using random: inout some RandomNumberGenerator) -> Duration {
        let nanoseconds = Self.nanoseconds(delay)
        return .nanoseconds(nanoseconds + Int64.random(in: 0...(nanoseconds / 4 + 1), using: &random))
    }

    public func nextDelay() -> Duration {
        var random = SystemRandomNumberGenerator()
        return nextDelay(using: &random)
    }

    /// An attempt failed: the delay doubles (up to `maximum`). Returns false when it was the last
    /// attempt allowed.
    public mutating func attemptFailed() -> Bool {
        attempts += 1
        delay = delay > maximum / 2 ? maximum : min(delay * 2, maximum)
        if let maxAttempts, attempts >= maxAttempts { return false }
        return true
    }

    static func nanoseconds(_ d: Duration) -> Int64 {
        let (seconds, attoseconds) = d.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}

extension Backoff {
    /// Why `retrying` stopped.
    public enum Outcome: Sendable {
        /// The attempts allowed are used up.
        case attemptsExhausted
        /// Waiting again would pass the deadline.
        case deadlinePassed
    }

    /// Runs `operation` until it succeeds. An error `shouldRetry` refuses is thrown at once; otherwise
    /// the loop waits (with this backoff) and tries again, until the attempts run out or the next wait
    /// would pass `deadline`; then `giveUp` turns the last error and the reason into what is thrown.
    /// Cancellation ends the wait with `CancellationError`.
    public func retrying<T>(
        until deadline: ContinuousClock.Instant? = nil,
        shouldRetry: (any Error) -> Bool = { !($0 is CancellationError) },
        onRetry: (_ attempt: Int, _ error: any Error) -> Void = { _, _ in },
        giveUp: (_ lastError: any Error, _ outcome: Outcome) -> any Error = { error, _ in error },
        _ operation: () async throws -> T
    ) async throws -> T {
        var backoff = self
        while true {
            do {
                return try await operation()
            } catch {
                guard shouldRetry(error) else { throw error }
                let wait = backoff.nextDelay()
                if let deadline, ContinuousClock.now + wait > deadline { throw giveUp(error, .deadlinePassed) }
                guard backoff.attemptFailed() else { throw giveUp(error, .attemptsExhausted) }
                onRetry(backoff.attempts, error)
                try await Task.sleep(for: wait)
            }
        }
    }
}
