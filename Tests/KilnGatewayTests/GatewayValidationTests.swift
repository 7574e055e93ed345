import Foundation
import HTTPTypes
import HummingbirdTesting
import KilnGateway
import KilnTestSupport
import NIOCore
import Testing

/// Every 400/401/404/405/409/413/415 the HTTP layer decides on its own, in-process (HummingbirdTesting,
/// no sockets or processes); nothing is stored for a rejected request.
@Suite struct GatewayValidationTests {
    @Test func badJSONSubmissionsAreRefusedWithAPlainTextReason() async throws {
        let archive = Data(try await Fixtures.archive(Fixtures.helloCrate(), root: "proj", zip: false)).base64EncodedString()
        try await InProcessGateway.test({ $0.maxBodyBytes = 1 << 20 }) { client, gateway in
            let cases: [(String, [String: Any], String)] = [
                ("nonce missing", ["repo_url": "https://example.invalid/x.git"], "nonce is missing"),
                ("nonce not hex", ["nonce": "zz11", "repo_url": "https://example.invalid/x.git"], "nonce must be hex"),
                ("nonce odd", ["nonce": "abc", "repo_url": "https://example.invalid/x.git"], "odd number"),
                ("nonce too long", ["nonce": String(repeating: "ab", count: 17), "repo_url": "https://example.invalid/x.git"], "at most 16 bytes"),
                ("neither", ["nonce": "abcd"], "not neither"),
                ("both", ["nonce": "abcd", "repo_url": "https://example.invalid/x.git", "source_data": archive], "not both"),
                ("wrong type", ["nonce": 1234, "repo_url": "https://example.invalid/x.git"], "must be a string"),
                ("bad base64", ["nonce": "abcd", "source_data": "@@not base64@@"], "not valid base64"),
                ("empty archive", ["nonce": "abcd", "source_data": ""], "archive is empty"),
                ("not an archive", ["nonce": "abcd", "source_data": Data("plain text".utf8).base64EncodedString()], "ZIP or a gzip"),
                ("file url", ["nonce": "abcd", "repo_url": "file:///etc/passwd"], "scheme 'file' is not allowed"),
                ("ssh url", ["nonce": "abcd", "repo_url": "ssh://git@example.invalid/x.git"], "scheme 'ssh' is not allowed"),
                ("local path", ["nonce": "abcd", "repo_url": "/srv/repo.git"], "local paths are not allowed"),
                ("credentials", ["nonce": "abcd", "repo_url": "https://user:pw@example.invalid/x.git"], "must not embed credentials"),
            ]
            for (name, body, text) in cases {
                let r = try await client.submit(json: body)
                #expect(r.status == .badRequest, "\(name): \(r.status) \(r.text)")
                #expect(r.text.contains(text), "\(name): \(r.text)")
                #expect(r.headers[.contentType]?.hasPrefix("text/plain") == true, "\(name)")
            }
            func post(_ body: [UInt8], _ contentType: String) async throws -> TestResponse {
                try await client.execute(uri: "/build", method: .post, headers: [.contentType: contentType], body: ByteBuffer(bytes: body))
            }
            let malformed = try await post(Array("{\"nonce\": ".utf8), "application/json")
            #expect(malformed.status == .badRequest && malformed.text.contains("not valid JSON"))
            let array = try await post(Array("[1,2]".utf8), "application/json")
            #expect(array.status == .badRequest && array.text.contains("must be an object"))
            let type = try await post(Array("nonce=ab".utf8), "text/plain")
            #expect(type.status == .unsupportedMediaType)
            let big = try await post([UInt8](repeating: 0x20, count: 2 << 20), "application/json")
            #expect(big.status == .contentTooLarge, "\(big.text)")
            // Multipart without boundary / without a source part.
            let noBoundary = try await post(Array("x".utf8), "multipart/form-data")
            #expect(noBoundary.status == .badRequest && noBoundary.text.contains("boundary"))
            let form = "--XyZ\r\nContent-Disposition: form-data; name=\"nonce\"\r\n\r\nabcd\r\n--XyZ--\r\n"
            let noSource = try await post(Array(form.utf8), "multipart/form-data; boundary=XyZ")
            #expect(noSource.status == .badRequest && noSource.text.contains("'source' file part"), "\(noSource.text)")
            // Nothing was stored.
            let counts = try await gateway.store.countByStatus()
            #expect(counts.values.allSatisfy { $0 == 0 }, "\(counts)")
        }
    }

    /// #18 item 4: no route matches → a plain-text 404 naming the path; a known path with another
    /// method → 405 with `Allow`.
    @Test func unknownRoutesAndMethodsAnswerInPlainText() async throws {
        try await InProcessGateway.test { client, _ in
            let missing = try await client.execute(uri: "/nope/deeper", method: .get)
            #expect(missing.status == .notFound && missing.text.contains("no endpoint GET /nope/deeper") && missing.text.contains("openapi.yaml"), "\(missing.text)")
            #expect(missing.headers[.contentType]?.hasPrefix("text/plain") == true)
            let wrongMethod = try await client.execute(uri: "/build/j123", method: .delete)
            #expect(wrongMethod.status == .methodNotAllowed && wrongMethod.text.contains("answers GET, not DELETE"), "\(wrongMethod.status) \(wrongMethod.text)")
            #expect(wrongMethod.headers[.allow] == "GET")
            let put = try await client.execute(uri: "/build", method: .put)
            #expect(put.status == .methodNotAllowed && put.headers[.allow] == "POST", "\(put.text)")
        }
    }

    @Test func unknownJobsAreNotFoundAndAWaitingJobsResultIsNotReady() async throws {
        try await InProcessGateway.test { client, _ in
            for (method, path) in [(HTTPRequest.Method.get, "/build/nope"), (.get, "/build/nope/result"), (.post, "/build/nope/cancel")] {
                let r = try await client.execute(uri: path, method: method)
                #expect(r.status == .notFound, "\(path)")
                #expect(r.text.contains("no job with id 'nope'"), "\(path): \(r.text)")
            }
            // No workers: the job waits; its result is not ready.
            let archive = Data(try await Fixtures.archive(Fixtures.helloCrate(), root: "proj", zip: false)).base64EncodedString()
            let submitted = try await client.submit(json: ["nonce": "abcd", "source_data": archive])
            #expect(submitted.status == .ok, "\(submitted.text)")
            let id = try #require((try JSONSerialization.jsonObject(with: Data(buffer: submitted.body)) as? [String: Any])?["job_id"] as? String)
            let r = try await client.execute(uri: "/build/\(id)/result", method: .get)
            #expect(r.status == .conflict)
            #expect(r.text.contains("not ready") && r.text.contains("waiting"), "\(r.text)")
        }
    }

    @Test func bearerTokensAreRequiredAndCheckedButKeysArePublic() async throws {
        try await InProcessGateway.test({ $0.principals = try PrincipalDirectory(tokens: ["s3cret-token"], file: nil) }) { client, _ in
            let none = try await client.execute(uri: "/build/x", method: .get)
            #expect(none.status == .unauthorized)
            #expect(none.headers[.wwwAuthenticate]?.hasPrefix("Bearer") == true)
            let wrong = try await client.execute(uri: "/build/x", method: .get, headers: [.authorization: "Bearer nope"])
            #expect(wrong.status == .unauthorized)
            let right = try await client.execute(uri: "/build/x", method: .get, headers: [.authorization: "Bearer s3cret-token"])
            #expect(right.status == .notFound)
            let keys = try await client.execute(uri: "/keys", method: .get)
            #expect(keys.status == .ok, "keys are public")
        }
    }
}

/// #13 items 3–4: build_config against the farm's maxima, build_options validated, both echoed.
@Suite struct BuildConfigValidationTests {
    static func archive() async throws -> String {
        Data(try await Fixtures.archive(Fixtures.helloCrate(), root: "proj", zip: false)).base64EncodedString()
    }

    @Test func aBuildConfigOverTheFarmsMaximaIsRefusedNamingTheLimit() async throws {
        let source = try await Self.archive()
        try await InProcessGateway.test({
            $0.buildMaxima.vcpus = 4
            $0.buildMaxima.memoryMiB = 2048
            $0.buildMaxima.timeoutSeconds = 600
        }) { client, gateway in
            let cases: [([String: Any], String)] = [
                (["build_config": ["vcpus": 8]], "build_config.vcpus is 8; this farm allows at most 4"),
                (["build_config": ["memory_mib": 4096]], "build_config.memory_mib is 4096; this farm allows at most 2048"),
                (["build_config": ["timeout_s": 0]], "build_config.timeout_s must be at least 1"),
                (["build_config": ["internet_access": true]], "internet_access is not allowed on this farm"),
                (["build_config": ["vcpus": "two"]], "vcpus must be an integer"),
                (["build_config": "big"], "field 'build_config' must be an object"),
                (["skip_cache": "yes"], "field 'skip_cache' must be true or false"),
                (["build_options": ["features": ["--all-features"]]], "invalid feature '--all-features'"),
                (["build_options": ["target": "x86_64 linux"]], "build_options.target 'x86_64 linux' is not a valid name"),
                (["build_options": ["package": "a;rm"]], "build_options.package 'a;rm' is not a valid name"),
            ]
            for (extra, text) in cases {
                let body = ["nonce": "abcd", "source_data": source].merging(extra) { a, _ in a }
                let r = try await client.submit(json: body)
                #expect(r.status == .badRequest, "\(extra): \(r.status) \(r.text)")
                #expect(r.text.contains(text), "\(extra): \(r.text)")
            }
            let counts = try await gateway.store.countByStatus()
            #expect(counts.values.allSatisfy { $0 == 0 }, "nothing stored: \(counts)")
        }
    }

    @Test func anAcceptedBuildConfigAndOptionsAreEchoedOnTheJob() async throws {
        let source = try await Self.archive()
        try await InProcessGateway.test({ $0.buildMaxima.internetAccess = true }) { client, _ in
            let r = try await client.submit(json: [
                "nonce": "abcd", "source_data": source, "skip_cache": true,
                "build_config": ["vcpus": 2, "memory_mib": 1024, "timeout_s": 120, "internet_access": true],
                "build_options": ["features": ["loud"], "no_default_features": true, "bin": "hello", "profile": "release"],
            ])
            #expect(r.status == .ok, "\(r.text)")
            let id = try #require((try JSONSerialization.jsonObject(with: Data(buffer: r.body)) as? [String: Any])?["job_id"] as? String)
            let job = try await client.execute(uri: "/build/\(id)", method: .get)
            let doc = try #require(try JSONSerialization.jsonObject(with: Data(buffer: job.body)) as? [String: Any])
            #expect(doc["skip_cache"] as? Bool == true)
            let config = try #require(doc["build_config"] as? [String: Any], "\(doc)")
            #expect(config["vcpus"] as? Int == 2 && config["memory_mib"] as? Int == 1024 && config["timeout_s"] as? Int == 120)
            #expect(config["internet_access"] as? Bool == true && config["disk_mb"] is NSNull)
            let options = try #require(doc["build_options"] as? [String: Any], "\(doc)")
            #expect(options["features"] as? [String] == ["loud"] && options["bin"] as? String == "hello" && options["no_default_features"] as? Bool == true)
        }
    }

    @Test func multipartFormsCarryTheSameFieldsAsJSONText() async throws {
        let tar = try await Fixtures.archive(Fixtures.helloCrate(), root: "proj", zip: false)
        try await InProcessGateway.test({ $0.buildMaxima.vcpus = 4 }) { client, _ in
            func form(_ config: String) -> ByteBuffer {
                var b = ByteBuffer()
                b.writeString("--XyZ\r\nContent-Disposition: form-data; name=\"nonce\"\r\n\r\nabcd\r\n")
                b.writeString("--XyZ\r\nContent-Disposition: form-data; name=\"build_config\"\r\n\r\n\(config)\r\n")
                b.writeString("--XyZ\r\nContent-Disposition: form-data; name=\"source\"; filename=\"p.tar.gz\"\r\nContent-Type: application/gzip\r\n\r\n")
                b.writeBytes(tar)
                b.writeString("\r\n--XyZ--\r\n")
                return b
            }
            let over = try await client.execute(
                uri: "/build", method: .post, headers: [.contentType: "multipart/form-data; boundary=XyZ"], body: form("{\"vcpus\": 9}"))
            #expect(over.status == .badRequest && over.text.contains("at most 4"), "\(over.text)")
            let fine = try await client.execute(
                uri: "/build", method: .post, headers: [.contentType: "multipart/form-data; boundary=XyZ"], body: form("{\"vcpus\": 3}"))
            #expect(fine.status == .ok, "\(fine.text)")
        }
    }
}

/// #14 item 3: the record of a job — request id, timestamps, who cancelled and why, availability.
@Suite struct JobRecordTests {
    @Test func theRecordSaysWhoCancelledWhyAndWhenAndQuotesTheRequestID() async throws {
        let source = try await BuildConfigValidationTests.archive()
        try await InProcessGateway.test { client, _ in
            let submitted = try await client.submit(json: ["nonce": "abcd", "source_data": source], headers: [HTTPField.Name("X-Request-Id")!: "req-42"])
            let answer = try #require(try JSONSerialization.jsonObject(with: Data(buffer: submitted.body)) as? [String: Any])
            #expect(answer["request_id"] as? String == "req-42")
            let id = try #require(answer["job_id"] as? String)
            let tooLong = try await client.execute(
                uri: "/build/\(id)/cancel", method: .post, headers: [.contentType: "application/json"],
                body: ByteBuffer(string: "{\"reason\": \"\(String(repeating: "x", count: 501))\"}"))
            #expect(tooLong.status == .badRequest, "\(tooLong.text)")
            // Found by the schemathesis run: a body past 4 KiB was the framework's empty 413.
            let huge = try await client.execute(
                uri: "/build/\(id)/cancel", method: .post, headers: [.contentType: "application/json"],
                body: ByteBuffer(string: "{\"reason\": \"\(String(repeating: "y", count: 5000))\"}"))
            #expect(huge.status == .contentTooLarge && huge.text.contains("at most 4096 bytes"), "\(huge.status) \(huge.text)")
            let cancelled = try await client.execute(
                uri: "/build/\(id)/cancel", method: .post, headers: [.contentType: "application/json"],
                body: ByteBuffer(string: "{\"reason\": \"superseded by a newer commit\"}"))
            #expect(cancelled.status == .accepted, "\(cancelled.text)")
            let doc = try #require(try JSONSerialization.jsonObject(with: Data(buffer: cancelled.body)) as? [String: Any])
            #expect(doc["status"] as? String == "cancelled")
            #expect(doc["cancellation_reason"] as? String == "superseded by a newer commit")
            #expect(doc["cancelled_by"] as? String != nil && doc["cancel_requested_at"] as? String != nil, "\(doc)")
            #expect(doc["created_at"] as? String == doc["queued_at"] as? String)
            #expect((doc["updated_at"] as? String ?? "") >= (doc["created_at"] as? String ?? "~"))
            let availability = try #require(doc["artifact_availability"] as? [String: Any])
            #expect(availability["available"] as? Bool == false && (availability["reason"] as? String)?.contains("cancelled") == true)
            #expect((doc["artifact_ids"] as? [Any])?.isEmpty == true)
            // A header that is not a plain token is not quoted back: the gateway makes its own id.
            let other = try await client.submit(json: ["nonce": "abcd", "source_data": source], headers: [HTTPField.Name("X-Request-Id")!: "a b\u{7f}"])
            let otherID = (try JSONSerialization.jsonObject(with: Data(buffer: other.body)) as? [String: Any])?["request_id"] as? String
            #expect(otherID?.hasPrefix("r") == true && otherID?.count == 21, "\(otherID ?? "")")
        }
    }
}
