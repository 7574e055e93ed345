import Foundation
import KilnTestSupport
import Testing

/// #12 item 5: the OpenAPI document and the routes a real gateway registers agree, both ways, and
/// the gateway serves the document it was built with.
@Suite(.serialized) struct OpenAPIDocumentTests {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    /// `METHOD /path` for every operation under `paths:` (the document's own two-space layout).
    static func documentedOperations(_ yaml: String) -> Set<String> {
        var operations = Set<String>()
        var path: String?
        var inPaths = false
        for line in yaml.split(separator: "\n", omittingEmptySubsequences: false) {
            if !line.hasPrefix(" ") {
                inPaths = line == "paths:"
                path = nil
                continue
            }
            guard inPaths else { continue }
            if line.hasPrefix("  /"), !line.hasPrefix("   "), line.hasSuffix(":") {
                path = String(line.dropFirst(2).dropLast())
            } else if let path, line.hasPrefix("    "), !line.hasPrefix("     "), line.hasSuffix(":") {
                let key = line.trimmingCharacters(in: .whitespaces).dropLast()
                if ["get", "put", "post", "delete", "patch", "head", "options"].contains(String(key)) {
                    operations.insert("\(key.uppercased()) \(path)")
                }
            }
        }
        return operations
    }

    @Test func theRoutesTheGatewayRegistersAreExactlyTheDocumentedOnes() async throws {
        let c = try await TestCluster()
        defer { c.stop() }
        let registered = Set(
            c.gateway.process.output.compactMap { line -> String? in
                guard let r = line.range(of: "serves ") else { return nil }
                return String(line[r.upperBound...]).trimmingCharacters(in: .whitespaces)
            })
        let yaml = try String(contentsOfFile: Self.packageRoot + "/docs/openapi.yaml", encoding: .utf8)
        let documented = Self.documentedOperations(yaml)
        #expect(registered.count >= 10, "\(registered)")
        #expect(registered.subtracting(documented).isEmpty, "registered but not documented: \(registered.subtracting(documented))")
        #expect(documented.subtracting(registered).isEmpty, "documented but not registered: \(documented.subtracting(registered))")
        // The document it serves is the one in docs/.
        let served = try await HTTPGet.get(port: c.gateway.port, path: "/openapi.yaml")
        #expect(served.status == 200 && served.body == yaml)
    }
}
