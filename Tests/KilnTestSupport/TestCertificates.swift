import Foundation

/// A throwaway PKI made with the openssl CLI at test time: a CA, a server certificate for
/// 127.0.0.1/localhost, client certificates with chosen common names, and an unrelated "rogue" CA.
public struct TestCertificates: Sendable {
    public let directory: String
    public var caCert: String { directory + "/ca.pem" }
    public var serverCert: String { directory + "/server.pem" }
    public var serverKey: String { directory + "/server.key" }
    public var rogueCA: String { directory + "/rogue-ca.pem" }
    public func clientCert(_ name: String) -> String { directory + "/client-\(name).pem" }
    public func clientKey(_ name: String) -> String { directory + "/client-\(name).key" }

    public init(directory: String, clients: [String] = []) async throws {
        self.directory = directory
        try await Self.openssl([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
            "-subj", "/CN=kiln-test-ca", "-keyout", directory + "/ca.key", "-out", directory + "/ca.pem",
        ])
        try await Self.openssl([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
            "-subj", "/CN=rogue-ca", "-keyout", directory + "/rogue-ca.key", "-out", directory + "/rogue-ca.pem",
        ])
        try await issue("server", cn: "kiln-broker", san: "subjectAltName=IP:127.0.0.1,DNS:localhost", key: serverKey, cert: serverCert)
        for c in clients { try await issue("client-\(c)", cn: c, san: nil, key: clientKey(c), cert: clientCert(c)) }
    }

    private func issue(_ name: String, cn: String, san: String?, key: String, cert: String) async throws {
        let csr = directory + "/\(name).csr"
        try await Self.openssl([
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=\(cn)",
            "-keyout", key, "-out", csr,
        ])
        var args = ["x509", "-req", "-in", csr, "-CA", caCert, "-CAkey", directory + "/ca.key", "-CAcreateserial", "-days", "2", "-out", cert]
        if let san {
            let ext = directory + "/\(name).ext"
            try san.write(toFile: ext, atomically: true, encoding: .utf8)
            args += ["-extfile", ext]
        }
        try await Self.openssl(args)
    }

    static func openssl(_ arguments: [String]) async throws {
        try await Command.run("/usr/bin/openssl", arguments)
    }
}
