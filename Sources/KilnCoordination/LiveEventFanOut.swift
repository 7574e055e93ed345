import KilnJobs

/// Where a stored event goes live: the HTTP layer's server-sent-event fan-out (`EventHub` in
/// KilnGateway) implements it. The coordination layer only hands it what the store holds, in order,
/// and asks who is following, so it knows nothing of connections or wire formats.
public protocol LiveEventFanOut: Sendable {
    /// Delivers a stored event to every live follower of its job.
    func publish(_ event: StoredEvent)
    /// Whether any live follower is reading `job`.
    func hasClients(job: String) -> Bool
    /// The jobs live followers read right now.
    func followedJobs() -> [String]
}
