import Foundation
import KilnBus

extension BusClient.Configuration {
    /// What every Kiln executable does with its `--broker`/`--broker-token` flags: the flag, else
    /// `KILN_BROKER_URL` / `KILN_BROKER_TOKEN`, else the local default. For `kilns://`,
    /// `KILN_BROKER_CA`, `KILN_BROKER_CERT` and `KILN_BROKER_KEY` name the PEM files.
    public static func fromCommandLine(url: String?, token: String?, name: String) throws -> BusClient.Configuration {
        let env = ProcessInfo.processInfo.environment
        var bus = try BusClient.Configuration(url: url ?? env["KILN_BROKER_URL"] ?? "kiln://127.0.0.1:4222")
        if let t = token ?? env["KILN_BROKER_TOKEN"] {
            // A NATS user's `.creds` text (what kiln-pool gives the workers it launches on a NATS bus).
            if NATSUserCredentials.isCredsText(t) { bus.natsCredentials = try NATSUserCredentials(creds: t) } else { bus.token = t }
        }
        // A NATS user's `.creds` file (the gateway's, the pool's, kiln-fetch's: `kiln keys nats`).
        if let file = env["KILN_BROKER_CREDS"] {
            bus.natsCredentials = try NATSUserCredentials(creds: String(contentsOfFile: file, encoding: .utf8))
        }
        // TLS (kilns://): the CA to trust and, for mTLS, this process's certificate and key.
        if bus.tls != nil {
            bus.tls = .init(caFile: env["KILN_BROKER_CA"], certificateFile: env["KILN_BROKER_CERT"], keyFile: env["KILN_BROKER_KEY"])
        }
        bus.name = name
        return bus
    }
}
