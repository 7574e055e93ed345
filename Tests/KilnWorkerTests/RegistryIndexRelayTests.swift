import Foundation
import KilnBusClient
import KilnTestSupport
import Logging
import Testing

@testable import KilnWorker

/// #13: the relay a lock-file resolution reads the registry through answers index paths and nothing
/// else, within its bounds — over a real Unix socket, through a real fetch service on a real broker,
/// against a real registry on loopback.
@Suite struct RegistryIndexRelayTests {
    @Test func onlyIndexPathsReachTheRegistry() {
        #expect(RegistryIndexRelay.crateName(indexPath: "/ki/ln/kiln_leaf") == "kiln_leaf")
        #expect(RegistryIndexRelay.crateName(indexPath: "/1/a") == "a")
        #expect(RegistryIndexRelay.crateName(indexPath: "/3/s/syn") == "syn")
        for hostile in [
            "/dl/kiln_leaf/0.1.0/download", "/../index/ki/ln/kiln_leaf", "/ki/ln/../ln/kiln_leaf", "/xx/yy/kiln_leaf", "/kiln_leaf",
            "/ki/ln/kiln%2fleaf", "/ki/ln/kiln_leaf/", "ki/ln/kiln_leaf", "/ki/ln/kiln leaf", "//ki/ln/kiln_leaf", "/config.json/../ki/ln/kiln_leaf",
        ] {
            #expect(RegistryIndexRelay.crateName(indexPath: hostile) == nil, "\(hostile)")
        }
    }

    @Test func servesIndexFilesRefusesEverythingElseAndStopsAtItsLimit() async throws {
        let registry = try await CrateRegistryFixture.twoCrates()
        defer { registry.stop() }
        let dir = try TemporaryDirectory(prefix: "kiln-relay")
        let broker = try await BrokerProcess()
        defer { broker.stop() }
        let service = try await FetchServiceProcess(broker: "kiln://127.0.0.1:\(broker.port)", state: dir.file("fetch"), registry: registry.indexURL)
        defer { service.stop() }
        let bus = try await BusClient.connect(.worker("wrelay", port: broker.port), logger: Logger(label: "relay-test"))
        let relay = try await RegistryIndexRelay.bind(
            socketPath: dir.file("index.sock"), fetch: FetchClient(client: bus, workerID: "wrelay", jobID: "jrelay"),
            configuration: .init(maxRequests: 6))
        let socket = dir.file("index.sock")
        @Sendable func get(_ path: String, method: String = "GET") async throws -> (Int, String) {
            let out = try await Command.run(
                "/usr/bin/curl", ["-s", "-X", method, "--unix-socket", socket, "-w", "\n%{http_code}", "http://relay" + path])
            let lines = out.split(separator: "\n", omittingEmptySubsequences: false)
            return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"))
        }
        try await relay.serve {
            let (s1, leaf) = try await get("/ki/ln/kiln_leaf")
            #expect(s1 == 200 && leaf.contains("\"vers\":\"0.1.0\""), "\(s1) \(leaf)")
            #expect(try await get("/config.json").0 == 200)
            #expect(try await get("/dl/kiln_leaf/0.1.0/download").0 == 404, "downloads never go through the relay")
            #expect(try await get("/ki/ln/kiln_nosuch").0 == 404, "the registry's 404 passes through")
            #expect(try await get("/ki/ln/kiln_leaf", method: "POST").0 == 405)
            #expect(try await get("/ki/ln/kiln_mid").0 == 200, "the sixth request is still admitted")
            #expect(try await get("/ki/ln/kiln_mid").0 == 429, "the seventh is over the limit")
        }
        await bus.close()
        let served = relay.served
        #expect(served.requests == 6 && served.refused == 1 && served.notFound == 2, "\(served)")
        #expect(served.bytes > 0)
    }
}
