import Foundation
import HTTPTypes
import NIOConcurrencyHelpers

/// Bounds what one principal (and everyone together) can hold or start: open SSE streams, in total
/// and per principal, and build submissions per principal per minute (a token bucket). Past a
/// limit the request is answered 429 with `Retry-After`, and counted.
public final class RequestLimiter: Sendable {
    public struct Configuration: Sendable {
        public var maxSSEStreams = 10_000
        public var maxSSEStreamsPerPrincipal = 100
        /// Sustained submissions per principal per minute; bursts up to the same number.
        public var submissionsPerMinute = 120

        public init() {}
    }

    struct State {
        var streams = 0
        var streamsByPrincipal: [String: Int] = [:]
        /// Tokens left and when they were last refilled.
        var buckets: [String: (tokens: Double, at: ContinuousClock.Instant)] = [:]
    }

    public let configuration: Configuration
    private let state = NIOLockedValueBox(State())
    private let clock = ContinuousClock()

    public init(configuration: Configuration) { self.configuration = configuration }

    /// Takes an SSE slot for `principal`, or throws 429. Pair with `releaseStream`.
    func acquireStream(_ principal: String) throws(GatewayError) {
        let refused: String? = state.withLockedValue { s in
            if s.streams >= configuration.maxSSEStreams { return "the gateway serves at most \(configuration.maxSSEStreams) event streams" }
            if s.streamsByPrincipal[principal, default: 0] >= configuration.maxSSEStreamsPerPrincipal {
                return "at most \(configuration.maxSSEStreamsPerPrincipal) event streams per caller are open at once"
            }
            s.streams += 1
            s.streamsByPrincipal[principal, default: 0] += 1
            return nil
        }
        if let refused { throw GatewayError(.tooManyRequests, refused + "; close one and retry", headers: [.retryAfter: "5"]) }
    }

    func releaseStream(_ principal: String) {
        state.withLockedValue { s in
            s.streams -= 1
            let n = s.streamsByPrincipal[principal, default: 1] - 1
            s.streamsByPrincipal[principal] = n > 0 ? n : nil
        }
    }

    /// Spends one submission from `principal`'s bucket, or throws 429 saying when the next one is free.
    func admitSubmission(_ principal: String) throws(GatewayError) {
        let perSecond = Double(configuration.submissionsPerMinute) / 60
        let capacity = Double(configuration.submissionsPerMinute)
        let now = clock.now
        let wait: Double? = state.withLockedValue { s in
            var bucket = s.buckets[principal] ?? (capacity, now)
            let elapsed = Double((now - bucket.at).components.seconds) + Double((now - bucket.at).components.attoseconds) / 1e18
            bucket.tokens = min(capacity, bucket.tokens + elapsed * perSecond)
            bucket.at = now
            defer { s.buckets[principal] = bucket }
            guard bucket.tokens >= 1 else { return (1 - bucket.tokens) / perSecond }
            bucket.tokens -= 1
            return nil
        }
        if let wait {
            let seconds = max(1, Int(wait.rounded(.up)))
            throw GatewayError(.tooManyRequests, "at most \(configuration.submissionsPerMinute) builds per minute per caller; retry in \(seconds) s",
                               headers: [.retryAfter: String(seconds)])
        }
    }
}
