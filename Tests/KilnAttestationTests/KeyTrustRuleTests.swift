import KilnAttestation
import Testing

/// #29 item 5: a pinned key (or one a pinned farm key certified) is the only trust unless the user
/// asks for hardware trust explicitly.
@Suite struct KeyTrustRuleTests {
    func decide(pinned: Bool = false, certificate: Bool = false, userPinned: Bool = false, hardware: Bool = false, trustHardware: Bool = false)
        -> KeyTrustRule.Decision
    {
        KeyTrustRule.decide(
            signer: "k1", signerIsPinned: pinned, hasCertificate: certificate, userPinnedKeys: userPinned,
            verdict: hardware ? .hardwareVerified : .noTEE, trustHardware: trustHardware)
    }

    @Test func aPinnedKeyIsTrustedWhateverElseTheResultCarries() {
        #expect(decide(pinned: true, userPinned: true) == .pinned)
        #expect(decide(pinned: true, certificate: true, userPinned: true, hardware: true) == .pinned)
    }

    @Test func aCertificateIsCheckedOnlyAgainstKeysTheUserPinned() {
        #expect(decide(certificate: true, userPinned: true) == .checkCertificate)
        guard case .refuse = decide(certificate: true) else {
            Issue.record("a certificate with nothing pinned to check it against was trusted")
            return
        }
    }

    /// The attack: the user pinned their farm's key; a result signed by another key that a genuine
    /// report from some other machine binds must not pass.
    @Test func aHardwareReportDoesNotStandInForThePinnedKey() {
        guard case .refuse(let why) = decide(userPinned: true, hardware: true) else {
            Issue.record("a hardware-bound key replaced the pinned one")
            return
        }
        #expect(why.contains("not the key you pinned") && why.contains("--trust-hardware"))
    }

    @Test func hardwareTrustIsNeverImplied() {
        guard case .refuse(let why) = decide(hardware: true) else {
            Issue.record("hardware trust without asking")
            return
        }
        #expect(why.contains("--trust-hardware"))
        #expect(decide(hardware: true, trustHardware: true) == .hardwareBound)
        #expect(decide(userPinned: true, hardware: true, trustHardware: true) == .hardwareBound)
    }

    @Test func withoutAReportOrAPinNothingVouches() {
        guard case .refuse = decide(trustHardware: true) else {
            Issue.record("trusted without a pin or a hardware-verified report")
            return
        }
    }
}
