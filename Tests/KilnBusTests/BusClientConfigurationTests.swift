import KilnBusClient
import Testing

@Suite struct BusClientConfigurationTests {
    @Test(arguments: [
        ("kiln://127.0.0.1:4222", "127.0.0.1", 4222, false),
        ("tcp://broker.example:5000", "broker.example", 5000, false),
        ("nats://n1:4222", "n1", 4222, false),
        ("kilns://broker:4443", "broker", 4443, true),
        ("tls://broker:4443/", "broker", 4443, true),
        ("localhost:4222", "localhost", 4222, false),
        ("kiln://[::1]:4222", "::1", 4222, false),
    ])
    func brokerURLsParse(url: String, host: String, port: Int, tls: Bool) throws {
        let c = try BusClient.Configuration(url: url)
        #expect(c.host == host)
        #expect(c.port == port)
        #expect((c.tls != nil) == tls)
        #expect(c.token == nil && c.user == nil && c.password == nil)
    }

    @Test func credentialsComeFromUserInfoOrTheQuery() throws {
        let login = try BusClient.Configuration(url: "kiln://gateway:s3cret@broker:4222")
        #expect(login.user == "gateway" && login.password == "s3cret" && login.token == nil)
        let token = try BusClient.Configuration(url: "kiln://abc123@broker:4222")
        #expect(token.token == "abc123" && token.user == nil)
        let query = try BusClient.Configuration(url: "kiln://broker:4222?token=xyz")
        #expect(query.token == "xyz")
    }

    @Test(arguments: [
        "kiln://broker", "kiln://:4222", "kiln://broker:0", "kiln://broker:70000", "kiln://broker:abc",
        "http://broker:4222", "kiln://broker:4222/some/path", "", "kiln://",
    ])
    func badURLsAreRefusedWithTheReason(url: String) {
        #expect(throws: BusClientError.self) { try BusClient.Configuration(url: url) }
    }
}
