import ArgumentParser
import Foundation
import KilnBusClient
import Logging
import NIOCore
import Synchronization

/// 1 publisher → 1 subscriber throughput and request/reply latency through a running kiln-broker,
/// mirroring ../shared/bench/natsbench.c so the two print comparable JSON lines.
struct BusBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bus")

    @Option var host = "127.0.0.1"
    @Option var port: Int?
    @Option(help: "A broker URL instead of --host/--port (nats://… measures Kiln's NATS client against nats-server).") var url: String?
    @Option var msgs = 1_000_000
    @Option var size = 128
    @Option var requests = 20_000

    func run() async throws {
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        var cfg = BusClient.Configuration(host: host, port: port ?? 4222, pendingLimit: 32 << 20)
        if let url {
            cfg = try BusClient.Configuration(url: url)
            cfg.pendingLimit = 32 << 20
        }
        let server = cfg.wireProtocol == .nats ? "nats-server (kiln client)" : "kiln-broker"
        let sub = try await BusClient.connect(cfg, logger: logger)
        let pub = try await BusClient.connect(cfg, logger: logger)
        let subscription = try sub.subscribe("bench.t")
        try await sub.flush()
        let payload = [UInt8](repeating: UInt8(ascii: "x"), count: size)
        let target = msgs
        let start = ContinuousClock.now
        let receiver = Task {
            var n = 0
            var bytes = 0
            for await m in subscription {
                n += 1
                bytes += m.payload.readableBytes
                if n == target { break }
            }
            return (n, bytes)
        }
        for _ in 0..<msgs { try await pub.publish("bench.t", payload: payload) }
        try await pub.flush(timeout: .seconds(120))
        let (received, bytes) = await receiver.value
        let elapsed = (ContinuousClock.now - start).seconds
        precondition(received == msgs && bytes == msgs * size, "lost messages: \(received)/\(msgs)")

        // Request/reply, one in flight, against an echo responder.
        let echo = try sub.subscribe("bench.echo")
        let responder = Task {
            for await m in echo { if let r = m.reply { try? await sub.publish(r, payload: m.payload) } }
        }
        try await sub.flush()
        var latencies: [Double] = []
        latencies.reserveCapacity(requests)
        for _ in 0..<requests {
            let a = ContinuousClock.now
            _ = try await pub.request("bench.echo", payload: payload, timeout: .seconds(5))
            latencies.append((ContinuousClock.now - a).seconds)
        }
        latencies.sort()
        responder.cancel()
        let line =
            "{\"server\":\"\(server)\","
            + String(
                format: "\"msgs\":%d,\"size\":%d,\"msgs_per_s\":%.0f,\"mb_per_s\":%.1f,\"rr_p50_us\":%.1f,\"rr_p99_us\":%.1f}",
                msgs, size, Double(msgs) / elapsed, Double(msgs * size) / elapsed / 1e6,
                latencies[requests / 2] * 1e6, latencies[requests * 99 / 100] * 1e6)
        print(line)
        await pub.close()
        await sub.close()
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
