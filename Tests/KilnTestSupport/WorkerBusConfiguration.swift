import KilnBusClient

extension BusClient.Configuration {
    /// A test client standing in for worker `id` on a local kiln-broker: its inbox is the worker's own
    /// (`_INBOX.<id>.`), the only reply subject the gateway and kiln-fetch answer a worker on.
    public static func worker(_ id: String, port: Int) -> BusClient.Configuration {
        var configuration = BusClient.Configuration(host: "127.0.0.1", port: port)
        configuration.inboxNamespace = id
        return configuration
    }
}
