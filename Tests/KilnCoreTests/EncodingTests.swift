import Foundation
import KilnCore
import Testing

@Suite struct EncodingTests {
    @Test func hexRoundTripsAndRefusesWhatIsNotHex() {
        let bytes: [UInt8] = [0x00, 0x0f, 0xa5, 0xff]
        #expect(bytes.hexString == "000fa5ff")
        #expect(Hex.decode("000fa5ff") == bytes)
        #expect(Hex.decode("000FA5FF") == bytes)
        #expect(Hex.decode("abc") == nil, "odd length")
        #expect(Hex.decode("zz") == nil)
        #expect(Hex.decode("") == [])
        #expect(Hex.isLowercase(String(repeating: "ab", count: 32), bytes: 32))
        #expect(!Hex.isLowercase(String(repeating: "AB", count: 32), bytes: 32))
        #expect(!Hex.isLowercase("ab", bytes: 32))
    }

    @Test func base64AcceptsBothAlphabetsWithOrWithoutPadding() {
        let bytes: [UInt8] = [0xfb, 0xff, 0xbf, 0x01]
        #expect(Base64.encode(bytes) == "+/+/AQ==")
        #expect(Base64.encodeURLSafe(bytes) == "-_-_AQ")
        #expect(Base64.decode("+/+/AQ==") == bytes)
        #expect(Base64.decode("-_-_AQ") == bytes)
        #expect(Base64.decode("  +/+/AQ==\n") == bytes)
        #expect(Base64.decode("not base64!") == nil)
    }

    @Test func constantTimeEqualityComparesWholeInputs() {
        #expect(ConstantTime.equals("token", "token"))
        #expect(!ConstantTime.equals("token", "tokeN"))
        #expect(!ConstantTime.equals("token", "token2"), "a prefix is not equal")
        #expect(!ConstantTime.equals("", "x"))
        #expect(ConstantTime.equals([UInt8](), []))
    }

    @Test func timestampsAreUTCWithWholeSecondsOrMilliseconds() {
        let date = Date(timeIntervalSince1970: 1_796_205_600.25)
        #expect(Timestamp.string(date) == "2026-12-02T10:00:00Z")
        #expect(Timestamp.preciseString(date) == "2026-12-02T10:00:00.250Z")
        #expect(Timestamp.parse("2026-12-02T10:00:00.250Z") == date)
        #expect(Timestamp.parse("2026-12-02T10:00:00Z") == Date(timeIntervalSince1970: 1_796_205_600))
        #expect(Timestamp.parse("2026-12-02T12:00:00+02:00") == Date(timeIntervalSince1970: 1_796_205_600))
        #expect(Timestamp.parse("yesterday") == nil)
    }
}
