import Foundation
import HTTPTypes
import KilnCoordination
import NIOConcurrencyHelpers

/// Bounds what one principal (and everyone together) can hold or start: open SSE streams and
/// uploads in progress, in total and per principal, and build submissions per principal per minute
/// (a token bucket). Past a limit the request is answered 429 with `Retry-After`, and counted.
public final class RequestLimiter: Sendable {
    public struct Configuration: Sendable {
        public var maxSSEStreams = 10_000
        public var maxSSEStreamsPerPrincipal = 100
        /// Request bodies being received (and spooled to disk) at once: the disk and I/O they take.
        public var maxUploads = 64
        public var maxUploadsPerPrincipal = 8
        /// Sustained submissions per principal per minute; bursts up to the same number.
        public var submissionsPerMinute = 120

        public init() {}

        func limits(_ slot: Slot) -> (total: Int, perPrincipal: Int) {
            switch slot {
            case .eventStream: (maxSSEStreams, maxSSEStreamsPerPrincipal)
            case .upload: (maxUploads, maxUploadsPerPrincipal)
            }
        }
    }

    /// Something a request holds while it runs.
    public enum Slot: Sendable, CaseIterable {
        case eventStream, upload

        var noun: String {
            switch self {
            case .eventStream: "event streams"
            case .upload: "uploads"
            }
        }
    }

    struct State {
        var held: [Slot: Int] = [:]
        var heldByPrincipal: [Slot: [String: Int]] = [:]
        /// Tokens left and when they were last refilled.
        var buckets: [String: (tokens: Double, at: ContinuousClock.Instant)] = [:]
    }

    public let configuration: Configuration
    /// Where refusals are counted (`kiln_gateway_requests_limited_total{limit}`).
    let metrics: GatewayMetrics?
    private let state = NIOLockedValueBox(State())
    private let clock = ContinuousClock()

    public init(configuration: Configuration, metrics: GatewayMetrics? = nil) {
        self.configuration = configuration
        self.metrics = metrics
    }

    /// Takes a `slot` for `principal`, or throws 429. Pair with `release`.
    func acquire(_ slot: Slot, for principal: String) throws(GatewayError) {
        let (total, perPrincipal) = configuration.limits(slot)
        let refused: String? = state.withLockedValue { s in
            if s.held[slot, default: 0] >= total { return "the gateway serves at most \(total) \(slot.noun) at once" }
            if s.heldByPrincipal[slot]?[principal] ?? 0 >= perPrincipal {
                return "at most \(perPrincipal) \(slot.noun) per caller are open at once"
            }
            s.held[slot, default: 0] += 1
            s.heldByPrincipal[slot, default: [:]][principal, default: 0] += 1
            return nil
        }
        if let refused {
            metrics?.requestsLimited(slot == .upload ? .uploads : .eventStreams)
            throw GatewayError(.tooManyRequests, refused + "; retry when one has finished", headers: [.retryAfter: "5"])
        }
    }

    func release(_ slot: Slot, for principal: String) {
        state.withLockedValue { s in
            s.held[slot, default: 1] -= 1
            let n = (s.heldByPrincipal[slot]?[principal] ?? 1) - 1
            s.heldByPrincipal[slot, default: [:]][principal] = n > 0 ? n : nil
        }
    }

    /// How many of `slot` are held now (for the metrics page).
    func held(_ slot: Slot) -> Int { state.withLockedValue { $0.held[slot, default: 0] } }

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
            metrics?.requestsLimited(.submissions)
            let seconds = max(1, Int(wait.rounded(.up)))
            throw GatewayError(
                .tooManyRequests, "at most \(configuration.submissionsPerMinute) builds per minute per caller; retry in \(seconds) s",
                headers: [.retryAfter: String(seconds)])
        }
    }
}
