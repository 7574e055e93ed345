/// Why the fetch service will not (or cannot) serve a request: sent to the worker as the reply's
/// `status` and `message` headers, counted by `reason`, and logged. `retryable` marks the farm's own
/// trouble (a registry or repository that did not answer) as opposed to an answer about the request.
public struct FetchRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Reason: String, Sendable, CaseIterable {
        /// Malformed request, name, version, digest, URL or ref.
        case badRequest = "bad_request"
        /// Not this worker's (stamped sender ≠ subject), or outside the job's plan.
        case forbidden
        /// Over a per-job quota: objects, bytes, time.
        case quota
        /// The registry or repository does not have it.
        case notFound = "not_found"
        /// A repository host the policy refuses.
        case hostPolicy = "host_policy"
        /// Larger than the service serves.
        case tooLarge = "too_large"
        /// The upstream did not answer, answered an error, or sent bytes that do not match the digest.
        case upstream
    }

    public var reason: Reason
    public var message: String
    public var retryable: Bool

    public init(_ reason: Reason, _ message: String, retryable: Bool = false) {
        self.reason = reason
        self.message = message
        self.retryable = retryable
    }

    /// The reply status the worker sees.
    public var status: Int {
        switch reason {
        case .badRequest: 400
        case .forbidden, .hostPolicy: 403
        case .notFound: 404
        case .tooLarge: 413
        case .quota: 429
        // Never 503: on the bus that status means "no responders".
        case .upstream: 502
        }
    }

    public var description: String { message }
}
