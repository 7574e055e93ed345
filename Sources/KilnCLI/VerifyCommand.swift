import ArgumentParser
import AsyncHTTPClient
import Foundation
import KilnAttestation
import NIOCore

struct VerifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Verify a result tarball or directory offline.",
        discussion: """
        Checks, in order: the DSSE signature with a trusted key, that the signed payload is provenance.json, \
        that report_data recomputes from the binding, the nonce, every manifest digest, and that the provenance \
        subjects are exactly artifacts/. Exits 0 only if all pass; otherwise prints what did not match.
        """)

    @Argument(help: "RESULT.tar.gz or an unpacked result directory.") var result: String
    @Option(help: "The nonce you sent with the build (hex).") var nonce: String
    @Option(name: .customLong("key"), help: "Trusted public key file (PEM, hex or base64; a private key file also works). Repeatable.")
    var keys: [String] = []
    @Option(help: "Gateway URL; trusts the keys it serves at /keys.") var gateway: String?
    @Flag(help: "Accept evidence without a TEE report (tee: none), trusting the farm key alone.") var allowTeeNone = false
    @Flag(help: "Print a JSON report.") var json = false

    func validate() throws {
        if keys.isEmpty && gateway == nil { throw ValidationError("give --key FILE or --gateway URL") }
        if case .failure(let e) = Nonce.validate(nonce) { throw ValidationError(e.description) }
    }

    func run() async throws {
        var trusted: [PublicKey] = []
        for path in keys {
            do { trusted.append(try PublicKey(contentsOf: path)) } catch {
                throw ValidationError("cannot load key \(path): \(error)")
            }
        }
        if let gateway { trusted += try await GatewayKeys.fetch(gateway) }
        let verifier = ResultVerifier(trustedKeys: trusted, expectedNonce: nonce, allowTEENone: allowTeeNone)
        let outcome: Result<ResultVerifier.Report, VerificationError>
        do { outcome = .success(try verifier.verify(path: result)) } catch { outcome = .failure(error) }
        switch outcome {
        case .success(let report):
            if json {
                print(String(decoding: try CanonicalJSON.encode(report), as: UTF8.self), terminator: "")
            } else {
                print("OK: \(report.artifacts.count) artifact(s), job \(report.jobID ?? "?"), tee \(report.tee ?? "?"), key \(report.keyID ?? "?")")
                for (path, digest) in report.artifacts.sorted(by: { $0.key < $1.key }) { print("  \(digest)  \(path)") }
            }
        case .failure(let error):
            if json {
                let report = ResultVerifier.Report(ok: false, failedStep: error.step, error: error.message)
                print(String(decoding: try CanonicalJSON.encode(report), as: UTF8.self), terminator: "")
            } else {
                FileHandle.standardError.write(Data("verification FAILED at \(error.step.rawValue): \(error.message)\n".utf8))
            }
            throw ExitCode(1)
        }
    }
}

/// Client side of the gateway's `GET /keys`.
enum GatewayKeys {
    static func fetch(_ base: String) async throws -> [PublicKey] {
        let url = base.hasSuffix("/") ? base + "keys" : base + "/keys"
        var request = HTTPClientRequest(url: url)
        if let token = ProcessInfo.processInfo.environment["KILN_TOKEN"] { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        let response: HTTPClientResponse
        let body: ByteBuffer
        do {
            response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
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
