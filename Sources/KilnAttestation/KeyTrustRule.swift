/// Which key a verifier trusts to have signed a result, decided apart from the cryptography so every
/// case is tested (the cryptography establishes the inputs). A key the user pinned, or one a pinned
/// farm key certified, is trusted; a key bound into a hardware-verified report is trusted **only when
/// the user asked for hardware trust** (`--trust-hardware`): a user who pinned a key expects that key,
/// and a report from some other genuine machine — anyone can rent one — would otherwise stand in for
/// it.
public enum KeyTrustRule {
    public enum Decision: Sendable, Equatable {
        case pinned
        /// Check the worker certificate against the pinned keys (`ResultVerifier+Certificate`).
        case checkCertificate
        case hardwareBound
        case refuse(String)
    }

    public static func decide(
        signer keyID: String, signerIsPinned: Bool, hasCertificate: Bool, userPinnedKeys: Bool, verdict: VerificationReport.Verdict?,
        trustHardware: Bool
    ) -> Decision {
        if signerIsPinned { return .pinned }
        if hasCertificate, userPinnedKeys { return .checkCertificate }
        if verdict == .hardwareVerified {
            if trustHardware { return .hardwareBound }
            return .refuse(
                "the result is signed by key \(keyID), bound into a hardware-verified report, but "
                    + (userPinnedKeys ? "it is not the key you pinned" : "you pinned no key")
                    + "; trust hardware alone only by asking for it (--trust-hardware), or pin the key (--key, --key-fingerprint)")
        }
        return .refuse(
            "the result is signed by key \(keyID), which you did not pin (--key, --key-fingerprint); "
                + "without a hardware-verified report nothing else vouches for it")
    }
}
