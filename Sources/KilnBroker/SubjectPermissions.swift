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

        /// May this (possibly wildcard) subscription be made?
        public func permitsSubscribe(_ subject: String) -> Bool {
            if deny.contains(where: { Subject.covers($0, subject) }) { return false }
            return allow.isEmpty || allow.contains(where: { Subject.covers($0, subject) })
        }

        /// Filters single deliveries: a wildcard subscription allowed in general still must not receive
        /// a message on a denied subject.
        public func permitsDelivery(_ subject: String) -> Bool {
            !deny.contains(where: { Subject.matches(subject, pattern: $0) })
        }

        var isUnrestricted: Bool { allow.isEmpty && deny.isEmpty }
    }

    public var publish: Rule
    public var subscribe: Rule
    public var allowResponses: Bool

    public static let unrestricted = SubjectPermissions()

    public init(publish: Rule = Rule(), subscribe: Rule = Rule(), allowResponses: Bool = false) {
        self.publish = publish
        self.subscribe = subscribe
        self.allowResponses = allowResponses
    }

    enum CodingKeys: String, CodingKey {
        case publish, subscribe
        case allowResponses = "allow_responses"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        publish = try c.decodeIfPresent(Rule.self, forKey: .publish) ?? Rule()
        subscribe = try c.decodeIfPresent(Rule.self, forKey: .subscribe) ?? Rule()
        allowResponses = try c.decodeIfPresent(Bool.self, forKey: .allowResponses) ?? false
    }

    /// Checks every pattern is a valid subscription subject, so a typo in a users file fails at start-up.
    public func validate() throws(BusError) {
        for p in publish.allow + publish.deny + subscribe.allow + subscribe.deny {
            try Subject.validateSubscription(p)
        }
    }
}
