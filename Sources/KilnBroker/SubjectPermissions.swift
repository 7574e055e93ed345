import KilnBus

/// Per-user publish/subscribe permissions (design §2 "Auth").
///
/// An empty `allow` list means "everything"; `deny` always wins. `allowResponses` lets a user reply to
/// requests it received even when the reply subject is outside its publish allow list (once per request).
public struct SubjectPermissions: Sendable, Equatable, Codable {
    public struct Rule: Sendable, Equatable, Codable {
        public var allow: [String]
        public var deny: [String]

        public init(allow: [String] = [], deny: [String] = []) {
            self.allow = allow
            self.deny = deny
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            allow = try c.decodeIfPresent([String].self, forKey: .allow) ?? []
            deny = try c.decodeIfPresent([String].self, forKey: .deny) ?? []
        }

        /// May a message be published to this literal subject?
        public func permitsPublish(_ subject: String) -> Bool {
            if deny.contains(where: { Subject.matches(subject, pattern: $0) }) { return false }
            return allow.isEmpty || allow.contains(where: { Subject.matches(subject, pattern: $0) })
        }

        /// May this (possibly wildcard) subscription be made? An allow entry "subject queue" (NATS
        /// syntax) permits the subject only in that queue group, so a worker can take its share of
        /// requests but never see them all.
        public func permitsSubscribe(_ subject: String, queue: String? = nil) -> Bool {
            if deny.contains(where: { Subject.covers(Self.pattern($0), subject) }) { return false }
            return allow.isEmpty
                || allow.contains { entry in
                    let (pattern, requiredQueue) = Self.split(entry)
                    return Subject.covers(pattern, subject) && (requiredQueue == nil || requiredQueue == queue)
                }
        }

        static func split(_ entry: String) -> (pattern: String, queue: String?) {
            guard let space = entry.firstIndex(of: " ") else { return (entry, nil) }
            return (String(entry[..<space]), String(entry[entry.index(after: space)...]))
        }

        static func pattern(_ entry: String) -> String { split(entry).pattern }

        /// Filters single deliveries: a wildcard subscription allowed in general still must not receive
        /// a message on a denied subject.
        public func permitsDelivery(_ subject: String) -> Bool {
            !deny.contains(where: { Subject.matches(subject, pattern: Self.pattern($0)) })
        }

        var isUnrestricted: Bool { allow.isEmpty && deny.isEmpty }
    }

    public var publish: Rule
    public var subscribe: Rule
    /// The reply subjects this user may name on a publish. Whoever answers a request publishes onto
    /// its reply subject with *its own* rights, so a reply subject is a publish made by proxy: a worker
    /// naming another job's control subject (or another worker's inbox) as the reply of a source
    /// request would have the gateway publish there for it. Unrestricted when empty.
    public var reply: Rule
    public var allowResponses: Bool

    public static let unrestricted = SubjectPermissions()

    public init(publish: Rule = Rule(), subscribe: Rule = Rule(), reply: Rule = Rule(), allowResponses: Bool = false) {
        self.publish = publish
        self.subscribe = subscribe
        self.reply = reply
        self.allowResponses = allowResponses
    }

    enum CodingKeys: String, CodingKey {
        case publish, subscribe, reply
        case allowResponses = "allow_responses"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        publish = try c.decodeIfPresent(Rule.self, forKey: .publish) ?? Rule()
        subscribe = try c.decodeIfPresent(Rule.self, forKey: .subscribe) ?? Rule()
        reply = try c.decodeIfPresent(Rule.self, forKey: .reply) ?? Rule()
        allowResponses = try c.decodeIfPresent(Bool.self, forKey: .allowResponses) ?? false
    }

    /// What a worker holding a `WorkerCredential` may do: take requests only in the workers' queue
    /// group or on its own direct subject, read only its own inbox and the jobs' control subjects,
    /// publish events, results and source requests (the gateway checks which job), announce itself,
    /// ask its pool to certify its key and the fetch service for its inputs — every one on a subject
    /// ending in (or naming) its own id, so the subject says who sent it — and answer the dispatch
    /// requests it received. Its requests' replies may come only to its own inbox.
    public static func worker(id: String) -> SubjectPermissions { SubjectPermissions(BusRoles.worker(id), replies: [BusRoles.workerInboxes(id)]) }

    /// One of the farm's roles (`BusRoles`), the same rules nats-server enforces for Kiln's minted users.
    public init(_ rules: BusRoles.Rules, replies: [String] = []) {
        self.init(
            publish: Rule(allow: rules.publishAllow, deny: rules.publishDeny), subscribe: Rule(allow: rules.subscribeAllow),
            reply: Rule(allow: replies), allowResponses: rules.answersRequests)
    }

    /// Checks every pattern is a valid subscription subject, so a typo in a users file fails at start-up.
    public func validate() throws(BusError) {
        for p in publish.allow + publish.deny { try Subject.validateSubscription(p) }
        for p in subscribe.allow + subscribe.deny { try Subject.validateSubscription(Rule.pattern(p)) }
        for p in reply.allow + reply.deny { try Subject.validateSubscription(p) }
    }
}
