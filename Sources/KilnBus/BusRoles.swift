/// What each of the farm's roles may do on the bus, in one place for both transports: kiln-broker's
/// minted worker credentials (`SubjectPermissions.worker`) and production users file
/// (`cluster/broker-users.production.json`, checked against this by `ProductionPermissionsTests`), and
/// the user JWTs Kiln mints for nats-server (`NATSJWT`).
///
/// The rule that makes identity work on a bus that stamps nothing (nats-server): everything a worker
/// publishes is on a subject ending in, or naming, its own id, and only that worker may publish there.
public enum BusRoles {
    public struct Rules: Sendable, Equatable {
        public var publishAllow: [String]
        public var publishDeny: [String]
        public var subscribeAllow: [String]
        /// May answer the requests it received (the reply subjects they name).
        public var answersRequests: Bool
    }

    public static let workersQueue = "workers"

    public static func worker(_ id: String) -> Rules {
        Rules(
            publishAllow: [
                "kiln.workers.ready.\(id)", "kiln.build.*.events.\(id)", "kiln.build.*.result.\(id)", "kiln.build.*.source.\(id)",
                "kiln.worker.\(id).certify", "kiln.worker.\(id).fetch.*",
            ],
            publishDeny: [],
            subscribeAllow: ["kiln.build.request \(workersQueue)", "kiln.worker.\(id).request", workerInboxes(id), "kiln.build.*.control"],
            answersRequests: true)
    }

    /// The only reply subjects a worker's requests may name, and the only ones the gateway and the
    /// fetch service answer a worker on: its own inbox namespace (`BusClient.Configuration.inboxNamespace`).
    public static func workerInboxes(_ id: String) -> String { "_INBOX.\(id).>" }

    public static func isInbox(_ reply: String, ofWorker id: some StringProtocol) -> Bool {
        reply.hasPrefix("_INBOX.") && reply.utf8.dropFirst(7).starts(with: id.utf8) && reply.utf8.dropFirst(7 + id.utf8.count).first == UInt8(ascii: ".")
    }

    public static let gateway = Rules(
        publishAllow: ["kiln.build.request", "kiln.build.*.control", "kiln.worker.*.request", "kiln.gateway.stored.*"],
        publishDeny: [],
        subscribeAllow: [
            "kiln.workers.ready.*", "kiln.build.*.events.*", "kiln.build.*.result.*", "kiln.build.*.source.*", "kiln.gateway.stored.*", "_INBOX.>",
        ],
        answersRequests: true)

    public static let pool = Rules(
        publishAllow: [], publishDeny: [">"], subscribeAllow: ["kiln.workers.ready.*", "kiln.build.*.events.*", "kiln.worker.*.certify"],
        answersRequests: true)

    public static let fetch = Rules(publishAllow: [], publishDeny: [">"], subscribeAllow: ["kiln.worker.*.fetch.*"], answersRequests: true)

    /// The same rules as a NATS user's permissions. Answers pass nats-server's checks through `resp`:
    /// each received request may be answered once.
    public static func nats(_ rules: Rules) -> NATSJWT.Permissions {
        NATSJWT.Permissions(
            publishAllow: rules.publishAllow, publishDeny: rules.publishDeny, subscribeAllow: rules.subscribeAllow,
            responses: rules.answersRequests ? 1 : nil)
    }
}
