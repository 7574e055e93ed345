import ArgumentParser
import AsyncHTTPClient
import Foundation
import KilnAttestation
import KilnCore
import KilnMessages
import KilnTEE
import NIOCore

struct VerifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Verify a result tarball or directory offline.",
        discussion: """
            Checks both DSSE envelopes (provenance and evidence claims), that evidence.json is what was signed, that \
            report_data recomputes from the binding, the TEE report against the vendor's pinned root (SEV-SNP: VCEK, ASK, \
            ARK; TDX: PCK chain to Intel's root), that the signing key is trusted, the nonce, every manifest digest, and \
            that the provenance subjects are exactly artifacts/. Verdicts: hardware-verified; tee-unverified (a report whose \
            chain could not be checked: refused unless --allow-unverified-tee); no-tee (refused unless --allow-tee-none). \
            A key is trusted only when pinned (--key, --key-fingerprint) or certified by a pinned farm key; a key bound into a hardware-verified report only with --trust-hardware. Exits 0 only if all pass.
            """)

    @Argument(help: "RESULT.tar.gz or an unpacked result directory.") var result: String
    @Option(help: "The nonce you sent with the build (hex).") var nonce: String
    @Option(name: .customLong("key"), help: "Trusted public key file (PEM, hex or base64; a private key file also works). Repeatable.")
    var keys: [String] = []
    @Option(name: .customLong("key-fingerprint"), help: "Trusted key fingerprint: hex SHA-256 of the raw Ed25519 public key (`kiln keys show`). Repeatable.")
    var keyFingerprints: [String] = []
    @Option(help: "Gateway URL; trusts the keys it serves at /keys (the gateway vouches for itself: prefer --key-fingerprint).") var gateway: String?
    @Flag(help: "Accept evidence without a TEE report (tee: none), trusting the farm key alone.") var allowTeeNone = false
    @Flag(help: "Accept a TEE report whose certificate chain cannot be checked here.") var allowUnverifiedTee = false
    @Flag(help: "Trust a signing key you did not pin when a hardware-verified report binds it (never implied).") var trustHardware = false
    @Option(help: "Require this SEV-SNP MEASUREMENT or TDX MRTD (hex).") var expectMeasurement: String?
    @Option(help: "SEV-SNP: the chip's VCEK certificate (PEM or DER), when the evidence carries none.") var vcek: String?
    @Option(help: "SEV-SNP: AMD's ASK then ARK (PEM), instead of the pinned ones; the ARK must still be AMD's.") var amdChain: String?
    @Flag(help: "Print a JSON report: verdict, measurement, TCB, key fingerprint and every check.") var json = false
    @Flag(
        help: """
            The result is a rebuild: also check its signed comparison with the original (rebuild/comparison.json) and print it. \
            Exits 2 when the comparison is authentic but the rebuild did not reproduce the original.
            """)
    var rebuilt = false
    @Option(help: "With --rebuilt: the original result, verified too, and checked to be the one the rebuild was compared with.")
    var original: String?

    func validate() throws {
        if case .failure(let e) = Nonce.validate(nonce) { throw ValidationError(e.description) }
        for f in keyFingerprints where Self.normalizedFingerprint(f) == nil {
            throw ValidationError("--key-fingerprint \(f) is not 64 hex characters")
        }
        if let m = expectMeasurement, Hex.decode(m) == nil { throw ValidationError("--expect-measurement must be hex") }
    }

    static func normalizedFingerprint(_ text: String) -> String? {
        var t = text.lowercased()
        if t.hasPrefix("sha256:") { t.removeFirst(7) }
        t = t.replacingOccurrences(of: ":", with: "")
        guard t.count == 64, Hex.decode(t) != nil else { return nil }
        return t
    }

    func run() async throws {
        var trusted: [PublicKey] = []
        for path in keys {
            do { trusted.append(try PublicKey(contentsOf: path)) } catch {
                throw ValidationError("cannot load key \(path): \(error)")
            }
        }
        if let gateway {
            let served = try await GatewayKeys.fetch(gateway)
            for key in served {
                FileHandle.standardError.write(
                    Data(
                        """
                        warning: trusting key \(key.keyID) because \(gateway) serves it: the gateway vouches for itself. \
                        Check this fingerprint out of band once, then pass --key-fingerprint \(key.keyID) instead.\n
                        """.utf8))
            }
            trusted += served
        }
        var options = ResultVerifier.Options(
            expectedNonce: nonce, trustedKeys: trusted, trustedKeyFingerprints: keyFingerprints.compactMap(Self.normalizedFingerprint),
            allowTEENone: allowTeeNone, allowUnverifiedTEE: allowUnverifiedTee, expectedMeasurement: expectMeasurement)
        options.trustHardware = trustHardware
        if let vcek { options.sevCertificates.vcek = try Self.certificates(vcek).first }
        if let amdChain {
            let chain = try Self.certificates(amdChain)
            guard chain.count == 2 else { throw ValidationError("--amd-chain \(amdChain) must hold the ASK then the ARK") }
            (options.sevCertificates.ask, options.sevCertificates.ark) = (chain[0], chain[1])
        }
        if rebuilt || original != nil {
            try verifyRebuild(options: options)
            return
        }
        let report = ResultVerifier(options: options).appraise(path: result)
        if json {
            print(String(decoding: try CanonicalJSON.encode(report), as: UTF8.self))
        } else if report.ok {
            print(Self.summary(report))
        } else {
            FileHandle.standardError.write(Data("verification FAILED at \(report.failedStep?.rawValue ?? "?"): \(report.error ?? "")\n".utf8))
        }
        if !report.ok { throw ExitCode(1) }
    }

    static func summary(_ report: VerificationReport) -> String {
        var lines: [String] = []
        switch report.verdict {
        case .hardwareVerified?: lines.append("OK: hardware-verified (\(report.tee ?? "?")): the vendor-signed report binds this result")
        case .teeUnverified?: lines.append("OK: tee-unverified (\(report.tee ?? "?")): a report binds this result, but its chain was NOT checked")
        case .noTEE?, nil: lines.append("OK: no-tee: only the farm key vouches for this result")
        }
        if report.hermetic == false {
            lines.append("  NOT HERMETIC: the build had network access (build_config.internet_access); its output may depend on what it downloaded")
        }
        lines.append("  job          \(report.jobID ?? "?")")
        if let c = report.buildConfig {
            let parts = [("vcpus", c.vcpus), ("memory_mib", c.memoryMiB), ("disk_mb", c.diskMB), ("timeout_s", c.timeoutSeconds)].compactMap { k, v in
                v.map { "\(k)=\($0)" }
            }
            lines.append("  build_config " + (parts + ["internet_access=\(c.internetAccess ?? false)"]).joined(separator: " "))
        }
        if let o = report.buildOptions, let json = try? JSONEncoder().encode(o) { lines.append("  build_options " + String(decoding: json, as: UTF8.self)) }
        let trust: String
        switch report.keyTrust {
        case .hardwareBound?: trust = "bound into the hardware report (no farm key needed)"
        case .certified?: trust = "a worker's in-memory key, certified by the farm key you pinned"
        case .pinned?, nil: trust = "pinned by you"
        }
        lines.append("  signing key  \(report.keyFingerprint ?? "?") (\(trust))")
        if let c = report.workerCertificate {
            lines.append("  certified    by farm key \(c.issuerKeyID) for worker \(c.workerID), \(c.notBefore) … \(c.notAfter)")
            for (name, digest) in c.image.sorted(by: { $0.key < $1.key }) { lines.append("  worker image \(digest)  \(name)") }
        }
        if let m = report.measurement { lines.append("  measurement  \(m)") }
        if let tcb = report.tcb, !tcb.isEmpty { lines.append("  tcb          " + tcb.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")) }
        for check in report.checks where check.outcome == .skipped { lines.append("  not checked  \(check.name): \(check.detail)") }
        lines.append("  \(report.artifacts.count) artifact(s):")
        for (path, digest) in report.artifacts.sorted(by: { $0.key < $1.key }) { lines.append("    \(digest)  \(path)") }
        return lines.joined(separator: "\n")
    }

    /// Certificates from a PEM file (one or more) or a single DER file.
    static func certificates(_ path: String) throws -> [[UInt8]] {
        guard let data = FileManager.default.contents(atPath: path) else { throw ValidationError("cannot read \(path)") }
        let text = String(decoding: data, as: UTF8.self)
        do {
            if text.contains("-----BEGIN CERTIFICATE-----") { return try X509Certificate.pemChain(text).map(\.der) }
            return [try X509Certificate(der: Array(data)).der]
        } catch {
            throw ValidationError("\(path) holds no certificate: \(error)")
        }
    }
}

/// Client side of the gateway's `GET /keys`.
enum GatewayKeys {
    static func fetch(_ base: String, http: HTTPClient = .shared) async throws -> [PublicKey] {
        let url = base.hasSuffix("/") ? base + "keys" : base + "/keys"
        var request = HTTPClientRequest(url: url)
        if let token = ProcessInfo.processInfo.environment["KILN_TOKEN"] { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        let response: HTTPClientResponse
        let body: ByteBuffer
        do {
            response = try await http.execute(request, timeout: .seconds(30))
            body = try await response.body.collect(upTo: 1 << 20)
        } catch {
            throw ValidationError("cannot fetch keys from \(url): \(error)")
        }
        guard response.status == .ok else { throw ValidationError("\(url) answered \(response.status.code): \(String(buffer: body))") }
        do {
            let set = try JSONDecoder().decode(KeySet.self, from: Data(body.readableBytesView))
            return try set.publicKeys()
        } catch {
            throw ValidationError("\(url) did not return a key set: \(error)")
        }
    }
}
