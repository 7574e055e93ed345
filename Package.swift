// swift-tools-version: 6.2
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6)
]

let package = Package(
    name: "kiln",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "kiln-broker", targets: ["Broker"]),
        .executable(name: "kiln", targets: ["KilnCLI"]),
        .executable(name: "kiln-worker", targets: ["Worker"]),
        .executable(name: "kiln-gateway", targets: ["Gateway"]),
        .executable(name: "kiln-pool", targets: ["Pool"]),
        .executable(name: "kiln-fetch", targets: ["Fetch"]),
        .library(name: "KilnBus", targets: ["KilnBus"]),
        .library(name: "KilnBusClient", targets: ["KilnBusClient"]),
        .library(name: "KilnAttestation", targets: ["KilnAttestation"]),
        .library(name: "KilnArchive", targets: ["KilnArchive"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess.git", from: "1.0.2"),
        .package(url: "https://github.com/apple/swift-system.git", from: "1.8.1"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.34.1"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.0"),
    ],
    targets: [
        // What several modules need and none should re-implement: constant-time compare, hex, base64,
        // timestamps, the retry backoff, the version and the logging set-up. No dependencies but swift-log.
        .target(
            name: "KilnCore",
            dependencies: [
                .product(name: "Logging", package: "swift-log")
            ], swiftSettings: swiftSettings),
        // The executables' metrics backend (Prometheus) and the /healthz + /metrics monitor server.
        .target(
            name: "KilnMonitor",
            dependencies: [
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ], swiftSettings: swiftSettings),
        // Bus v1 wire protocol: frames, headers, subjects. Shared by broker and client.
        .target(
            name: "KilnBus",
            dependencies: [
                "KilnCore",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ], swiftSettings: swiftSettings),
        .target(
            name: "KilnBusClient",
            dependencies: [
                "KilnBus", "KilnCore",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ], swiftSettings: swiftSettings),
        .target(
            name: "KilnBroker",
            dependencies: [
                "KilnBus", "KilnCore",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ], swiftSettings: swiftSettings),
        .executableTarget(
            name: "Broker",
            dependencies: [
                "KilnBroker", "KilnCore", "KilnMonitor",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ], swiftSettings: swiftSettings),

        .systemLibrary(name: "CArchive", pkgConfig: "libarchive", providers: [.apt(["libarchive-dev"])]),
        // openat2, setfsuid and the sandbox's seccomp program: what Swift cannot call directly.
        .target(name: "CKilnSystem"),
        .target(
            name: "KilnArchive",
            dependencies: [
                "CArchive", "CKilnSystem", "KilnCore",
                .product(name: "Crypto", package: "swift-crypto"),
            ], swiftSettings: swiftSettings),
        // Offline checks of SEV-SNP reports and TDX quotes against pinned vendor roots.
        .target(
            name: "KilnTEE",
            dependencies: [
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ], swiftSettings: swiftSettings),
        .target(
            name: "KilnAttestation",
            dependencies: [
                "KilnArchive", "KilnTEE", "KilnCore", "KilnMessages",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
            ], swiftSettings: swiftSettings),
        // Messages exchanged between gateway and workers over the bus (design §3).
        .target(name: "KilnMessages", dependencies: [], swiftSettings: swiftSettings),
        // Child processes: spawned without inheriting stray descriptors, reaped without blocking a thread.
        .target(
            name: "KilnProcess",
            dependencies: [
                "CKilnSystem",
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ], swiftSettings: swiftSettings),
        .target(
            name: "KilnStandInWorker",
            dependencies: [
                "KilnMessages", "KilnBusClient", "KilnArchive",
                .product(name: "Logging", package: "swift-log"),
            ], swiftSettings: swiftSettings),
        .target(
            name: "KilnHost", dependencies: ["KilnArchive"], swiftSettings: swiftSettings),
        .target(
            name: "KilnWorker",
            dependencies: [
                "KilnMessages", "KilnBus", "KilnBusClient", "KilnAttestation", "KilnArchive", "KilnProcess", "KilnCore", "KilnHost", "CKilnSystem",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ], swiftSettings: swiftSettings),
        .executableTarget(
            name: "Worker",
            dependencies: [
                "KilnWorker", "KilnAttestation", "KilnBusClient", "KilnCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ], swiftSettings: swiftSettings),
        // The farm's fetch service (#28): the one process with a network that build inputs come from —
        // crates from a registry into a farm-wide cache, git commits as packs — served to workers over
        // the bus, charged to each worker's account.
        .target(
            name: "KilnFetch",
            dependencies: [
                "KilnMessages", "KilnBus", "KilnBusClient", "KilnProcess", "KilnCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ], swiftSettings: swiftSettings),
        .executableTarget(
            name: "Fetch",
            dependencies: [
                "KilnFetch", "KilnBusClient", "KilnCore", "KilnMonitor",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ], swiftSettings: swiftSettings),
        .target(
            name: "KilnJobs",
            dependencies: ["KilnMessages", "KilnCore"], swiftSettings: swiftSettings),
        .target(
            name: "KilnJobStore",
            dependencies: [
                "KilnJobs", "KilnCore",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ], swiftSettings: swiftSettings),
        // The streaming parsers of a `POST /build` body and its validation: pure, no HTTP, fuzzed.
        .target(
            name: "KilnSubmission",
            dependencies: [
                "KilnMessages", "KilnAttestation",
                .product(name: "NIOCore", package: "swift-nio"),
            ], swiftSettings: swiftSettings),
        // The gateway's coordination room: jobs between the store and the bus (dispatch, event and
        // result intake, retries, ownership across gateways). It knows no HTTP.
        .target(
            name: "KilnCoordination",
            dependencies: [
                "KilnJobs", "KilnSubmission", "KilnMessages", "KilnBus", "KilnBusClient", "KilnArchive", "KilnCore",
                .product(name: "_NIOFileSystem", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ], swiftSettings: swiftSettings),
        // The gateway's HTTP room: routes, streaming submissions, SSE, the dashboard.
        .target(
            name: "KilnGateway",
            dependencies: [
                "KilnCoordination", "KilnJobs", "KilnJobStore", "KilnSubmission", "KilnMessages", "KilnBus", "KilnBusClient", "KilnAttestation", "KilnArchive",
                "KilnCore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "_NIOFileSystem", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            resources: [
                .embedInCode("Resources/openapi.yaml"), .embedInCode("Resources/dashboard/index.html"),
                .embedInCode("Resources/dashboard/dashboard.js"), .embedInCode("Resources/dashboard/verify.js"),
                .embedInCode("Resources/dashboard/dashboard.css"),
            ], swiftSettings: swiftSettings),
        .executableTarget(
            name: "Gateway",
            dependencies: [
                "KilnGateway", "KilnCoordination", "KilnBusClient", "KilnCore", "KilnMessages", "KilnMonitor",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ], swiftSettings: swiftSettings),
        .target(
            name: "KilnPool",
            dependencies: [
                "KilnMessages", "KilnBus", "KilnBusClient", "KilnHost", "KilnProcess", "KilnAttestation", "KilnCore",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ], swiftSettings: swiftSettings),
        .executableTarget(
            name: "Pool",
            dependencies: [
                "KilnPool", "KilnBusClient", "KilnAttestation", "KilnCore", "KilnMonitor",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ], swiftSettings: swiftSettings),
        .executableTarget(
            name: "KilnCLI",
            dependencies: [
                "KilnAttestation", "KilnArchive", "KilnTEE", "KilnCore", "KilnMessages", "KilnBus",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ], swiftSettings: swiftSettings),
        // Fuzz targets (fuzz/): libFuzzer when built with -sanitize=fuzzer (`make fuzz`), corpus replay otherwise.
        .target(name: "CKilnFuzz", path: "fuzz/CKilnFuzz"),
        .target(name: "KilnFuzzSupport", dependencies: ["CKilnFuzz"], path: "fuzz/KilnFuzzSupport", swiftSettings: swiftSettings),
        .executableTarget(
            name: "FuzzBusFrames",
            dependencies: [
                "KilnFuzzSupport", "KilnBus", "KilnBroker", .product(name: "NIOCore", package: "swift-nio"),
            ], path: "fuzz/FuzzBusFrames", swiftSettings: swiftSettings),
        .executableTarget(
            name: "FuzzGatewayMessages",
            dependencies: [
                "KilnFuzzSupport", "KilnBus", "KilnCoordination", "KilnMessages", .product(name: "NIOCore", package: "swift-nio"),
            ], path: "fuzz/FuzzGatewayMessages", swiftSettings: swiftSettings),
        .executableTarget(
            name: "FuzzSubmissionBodies",
            dependencies: [
                "KilnFuzzSupport", "KilnSubmission", .product(name: "NIOCore", package: "swift-nio"),
            ], path: "fuzz/FuzzSubmissionBodies", swiftSettings: swiftSettings),

        .target(
            name: "KilnTestSupport",
            dependencies: [
                "KilnBus", "KilnBusClient", "KilnProcess", "KilnCore",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ], path: "Tests/KilnTestSupport", swiftSettings: swiftSettings),
        .testTarget(
            name: "KilnCoreTests", dependencies: ["KilnCore", "KilnMonitor", "KilnTestSupport", .product(name: "Metrics", package: "swift-metrics")],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "KilnBusTests",
            dependencies: [
                "KilnBus", "KilnBroker", "KilnBusClient", "KilnMonitor", "KilnTestSupport", "KilnCore",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ], swiftSettings: swiftSettings),
        .testTarget(name: "KilnArchiveTests", dependencies: ["KilnArchive", "CArchive", "KilnTestSupport"], swiftSettings: swiftSettings),
        .testTarget(
            name: "KilnWorkerTests",
            dependencies: [
                "KilnWorker", "KilnMessages", "KilnBusClient", "KilnAttestation", "KilnArchive", "KilnCore", "KilnHost", "KilnTestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "KilnJobsTests", dependencies: ["KilnJobs", "KilnMessages"], swiftSettings: swiftSettings),
        .testTarget(
            name: "KilnJobStoreTests",
            dependencies: [
                "KilnJobStore", "KilnJobs", "KilnTestSupport",
                .product(name: "Logging", package: "swift-log"),
            ], swiftSettings: swiftSettings),
        .testTarget(
            name: "KilnSubmissionTests",
            dependencies: [
                "KilnSubmission", "KilnTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
            ], swiftSettings: swiftSettings),
        .testTarget(
            name: "KilnGatewayTests",
            dependencies: [
                "KilnGateway", "KilnCoordination", "KilnJobs", "KilnJobStore", "KilnMessages", "KilnBus", "KilnBroker", "KilnBusClient", "KilnAttestation",
                "KilnArchive", "KilnTestSupport", "KilnStandInWorker",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ], swiftSettings: swiftSettings),
        .testTarget(
            name: "KilnClusterTests",
            dependencies: [
                "KilnTestSupport", "KilnBus", "KilnBusClient", "KilnMessages", "KilnAttestation", "KilnPool", "KilnProcess", "KilnTEE",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ], swiftSettings: swiftSettings),
        .testTarget(
            name: "KilnAttestationTests",
            dependencies: [
                "KilnAttestation", "KilnArchive", "KilnTEE", "KilnCore", "KilnTestSupport",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ], swiftSettings: swiftSettings),
        .testTarget(
            name: "KilnFetchTests",
            dependencies: ["KilnFetch", "KilnMessages", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: swiftSettings),
        .testTarget(name: "KilnTEETests", dependencies: ["KilnTEE"], exclude: ["Vectors"], swiftSettings: swiftSettings),
    ]
)

// The benchmark driver builds only when asked (`make bench` sets KILN_BENCH=1): everyday builds and CI
// do not compile it.
if Context.environment["KILN_BENCH"] == "1" {
    package.products.append(.executable(name: "kiln-bench", targets: ["KilnBench"]))
    package.targets.append(
        .executableTarget(
            name: "KilnBench",
            dependencies: [
                "KilnBusClient", "KilnAttestation", "KilnArchive", "KilnMessages", "KilnStandInWorker",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ], path: "bench/KilnBench", swiftSettings: swiftSettings)
    )
}
