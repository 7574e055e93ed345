import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Many concurrent SSE clients on one job, measuring publish → receive latency of every `log`
/// event. Compiled (NIO, one event-loop thread by default) so that the client's own cost stays
/// small beside the gateway's on a 2-core machine; the fake worker puts its send time (`t=` wall
/// clock nanoseconds, same host) into each log line.
struct SSEClients: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "sse-clients")

    @Option var host = "127.0.0.1"
    @Option var port: Int
    @Option var job: String
    @Option var clients = 1000
    @Option(help: "Event-loop threads for the clients.") var threads = 1
    @Option(help: "Written once every client has its stream open (tells the fake worker to start).") var goFile: String?
    @Option(help: "The gateway's pid, for its peak RSS.") var gatewayPid: Int?
    @Option var timeout = 600.0

    func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let results = SSEResults()
        var channels: [any Channel] = []
        for _ in 0..<clients {
            let handler = SSEClientHandler(results: results, request: "GET /build/\(job)/events HTTP/1.1\r\nHost: \(host)\r\nAccept: text/event-stream\r\n\r\n")
            let channel = try await ClientBootstrap(group: group)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { $0.pipeline.addHandler(handler) }
                .connect(host: host, port: port).get()
            channels.append(channel)
        }
        // Every stream open (the response head seen) before the worker starts publishing.
        let openBy = ContinuousClock.now + .seconds(60)
        while results.opened < clients, ContinuousClock.now < openBy { try await Task.sleep(for: .milliseconds(20)) }
        try await Task.sleep(for: .milliseconds(500))
        let cpuBefore = processCPUSeconds()
        let gatewayCPUBefore = gatewayPid.map(cpuSeconds(pid:)) ?? 0
        if let goFile { try Data("go".utf8).write(to: URL(fileURLWithPath: goFile)) }
        let deadline = ContinuousClock.now + .seconds(timeout)
        while results.finished < clients, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        let clientCPU = processCPUSeconds() - cpuBefore
        let gatewayCPU = (gatewayPid.map(cpuSeconds(pid:)) ?? 0) - gatewayCPUBefore
        for c in channels { try? await c.close() }
        try await group.shutdownGracefully()

        var rss = 0.0
        if let gatewayPid, let status = try? String(contentsOfFile: "/proc/\(gatewayPid)/status", encoding: .utf8) {
            for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
                rss = (Double(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0) / 1024
            }
        }
        if results.latencies.isEmpty, let terminal = results.terminal {
            FileHandle.standardError.write(Data("no events measured; the stream ended with:\n\(terminal)\n".utf8))
        }
        var lat = results.latencies
        lat.sort()
        func pct(_ p: Double) -> Double { lat.isEmpty ? -1 : lat[min(lat.count - 1, Int(Double(lat.count) * p / 100))] }
        func r(_ v: Double) -> Double { (v * 100).rounded() / 100 }
        print(
            #"{"case": "sse_fanout", "clients": \#(clients), "clients_finished": \#(results.finished), "events_received": \#(lat.count), "p50_ms": \#(r(pct(50))), "p99_ms": \#(r(pct(99))), "max_ms": \#(r(lat.last ?? -1)), "gateway_peak_rss_mib": \#(r(rss)), "client_cpu_s": \#(r(clientCPU)), "gateway_cpu_s": \#(r(gatewayCPU))}"#
        )
    }
}

/// Shared tallies of all clients.
final class SSEResults: Sendable {
    private let state = NIOLockedValueBox((opened: 0, finished: 0, latencies: [Double](), terminal: String?.none))
    /// The first terminal event seen, for diagnosis when a run goes wrong.
    var terminal: String? { state.withLockedValue { $0.terminal } }
    func sawTerminal(_ block: String) { state.withLockedValue { if $0.terminal == nil { $0.terminal = block } } }
    var opened: Int { state.withLockedValue { $0.opened } }
    var finished: Int { state.withLockedValue { $0.finished } }
    var latencies: [Double] { state.withLockedValue { $0.latencies } }
    func open() { state.withLockedValue { $0.opened += 1 } }
    func finish(_ latencies: [Double]) {
        state.withLockedValue {
            $0.finished += 1
            $0.latencies.append(contentsOf: latencies)
        }
    }
}

/// One SSE connection: sends the GET, then scans the stream for `t=<nanos>` markers and the
/// terminal event. Chunked-encoding size lines fall between events and are ignored. Scans the
/// received bytes in place (only an incomplete tail is kept), so the client costs little per event.
final class SSEClientHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    let results: SSEResults
    let request: String
    private var tail: [UInt8] = []
    private var latencies: [Double] = []
    private var opened = false
    private var done = false

    init(results: SSEResults, request: String) {
        self.results = results
        self.request = request
        latencies.reserveCapacity(1024)
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(NIOAny(ByteBuffer(string: request)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let now = wallClockNanos()
        let buffer = unwrapInboundIn(data)
        if !opened {
            opened = true
            results.open()
        }
        if tail.isEmpty {
            buffer.withUnsafeReadableBytes { scan($0, now: now) }
        } else {
            tail.append(contentsOf: buffer.readableBytesView)
            let joined = tail
            tail = []
            joined.withUnsafeBytes { scan($0, now: now) }
        }
        if done {
            results.finish(latencies)
            latencies = []
            context.close(promise: nil)
        }
    }

    /// Handles every complete event (ending in a blank line) in `bytes`; keeps the rest in `tail`.
    private func scan(_ bytes: UnsafeRawBufferPointer, now: UInt64) {
        var start = 0
        var i = 0
        let n = bytes.count
        while i + 1 < n {
            if bytes[i] == 0x0A, bytes[i + 1] == 0x0A {
                block(UnsafeRawBufferPointer(rebasing: bytes[start..<i]), now: now)
                i += 2
                start = i
            } else {
                i += 1
            }
        }
        if start < n { tail.append(contentsOf: bytes[start..<n]) }
    }

    private func block(_ b: UnsafeRawBufferPointer, now: UInt64) {
        // "event: <type>" follows the "id:" line.
        if let e = find(b, "\nevent: ") {
            let type = e + 8
            func starts(_ s: StaticString) -> Bool {
                guard type + s.utf8CodeUnitCount <= b.count else { return false }
                for k in 0..<s.utf8CodeUnitCount where b[type + k] != s.utf8Start[k] { return false }
                return true
            }
            if starts("done") || starts("cancelled") || starts("failed") {
                done = true
                results.sawTerminal(String(decoding: b, as: UTF8.self))
                return
            }
            guard starts("log") else { return }
        }
        guard let marker = find(b, "t=") else { return }
        var value: UInt64 = 0
        var j = marker + 2
        while j < b.count, b[j] >= 0x30, b[j] <= 0x39 {
            value = value * 10 + UInt64(b[j] - 0x30)
            j += 1
        }
        if value > 0 { latencies.append(Double(Int64(now) - Int64(value)) / 1e6) }
    }

    private func find(_ b: UnsafeRawBufferPointer, _ s: StaticString) -> Int? {
        let m = s.utf8CodeUnitCount
        guard b.count >= m else { return nil }
        let first = s.utf8Start[0]
        var i = 0
        while i + m <= b.count {
            if b[i] == first {
                var k = 1
                while k < m, b[i + k] == s.utf8Start[k] { k += 1 }
                if k == m { return i }
            }
            i += 1
        }
        return nil
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
}

func wallClockNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}

/// utime + stime of another process, from /proc/<pid>/stat.
func cpuSeconds(pid: Int) -> Double {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return 0 }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    // After the command: state is field 3, utime 14, stime 15 (1-based over the whole line).
    guard fields.count > 13, let u = Double(fields[11]), let s = Double(fields[12]) else { return 0 }
    return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
}
