import KilnCore
import KilnTestSupport
import Synchronization
import Testing

@Suite struct BackoffTests {
    @Test func delaysDoubleUpToTheMaximumWithBoundedJitterAndTheLastAttemptIsSaid() {
        var backoff = Backoff(initial: .nanoseconds(1000), maximum: .nanoseconds(7000), maxAttempts: 5)
        var random = SeededGenerator(seed: 42)
        var delays: [Duration] = []
        for _ in 0..<4 {
            delays.append(backoff.nextDelay(using: &random))
            let more = backoff.attemptFailed()
            #expect(more)
        }
        delays.append(backoff.nextDelay(using: &random))
        let bases: [Int64] = [1000, 2000, 4000, 7000, 7000]
        for (delay, base) in zip(delays, bases) {
            #expect(delay >= .nanoseconds(base) && delay <= .nanoseconds(base + base / 4 + 1), "\(delays)")
        }
        let more = backoff.attemptFailed()
        #expect(!more, "the fifth failure is the last")
        #expect(backoff.attempts == 5)
    }

    struct Flaky: Error {}
    struct Refused: Error {}

    @Test func retryingStopsAtTheFirstSuccess() async throws {
        let calls = Atomic(0)
        let value = try await Backoff(initial: .milliseconds(1), maximum: .milliseconds(2), maxAttempts: 10).retrying {
            if calls.add(1, ordering: .relaxed).newValue < 3 { throw Flaky() }
            return "built"
        }
        #expect(value == "built")
        #expect(calls.load(ordering: .relaxed) == 3)
    }

    @Test func anErrorThatMustNotBeRetriedIsThrownAtOnce() async throws {
        let calls = Atomic(0)
        await #expect(throws: Refused.self) {
            try await Backoff(initial: .milliseconds(1), maximum: .milliseconds(2), maxAttempts: 10).retrying(shouldRetry: { !($0 is Refused) }) {
                calls.add(1, ordering: .relaxed)
                throw Refused()
            }
        }
        #expect(calls.load(ordering: .relaxed) == 1)
    }

    @Test func runningOutOfAttemptsGivesUpWithTheLastErrorAndTheReason() async throws {
        let calls = Atomic(0)
        let retries = Mutex<[Int]>([])
        do {
            _ = try await Backoff(initial: .milliseconds(1), maximum: .milliseconds(2), maxAttempts: 3).retrying(
                onRetry: { attempt, _ in retries.withLock { $0.append(attempt) } },
                giveUp: { _, outcome in Refused() as any Error }
            ) { () async throws -> Int in
                calls.add(1, ordering: .relaxed)
                throw Flaky()
            }
            Issue.record("did not give up")
        } catch is Refused {}
        #expect(calls.load(ordering: .relaxed) == 3, "three attempts in all")
        #expect(retries.withLock { $0 } == [1, 2])
    }

    @Test func aDeadlineThatTheNextWaitWouldPassEndsTheRetries() async throws {
        let start = ContinuousClock.now
        var reason: Backoff.Outcome?
        do {
            _ = try await Backoff(initial: .milliseconds(40), maximum: .milliseconds(40)).retrying(
                until: start + .milliseconds(100),
                giveUp: { error, outcome in
                    reason = outcome
                    return error
                }
            ) { () async throws -> Int in throw Flaky() }
        } catch is Flaky {}
        #expect(reason == .deadlinePassed)
    }

    @Test func cancellationEndsTheWait() async throws {
        let task = Task {
            try await Backoff(initial: .seconds(30), maximum: .seconds(30)).retrying { () async throws -> Int in throw Flaky() }
        }
        try await Task.sleep(for: .milliseconds(50))
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
    }
}
