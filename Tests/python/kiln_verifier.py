"""An independent verifier of Kiln results, written from the format's description rather than from
Kiln's Swift code: securesystemslib checks both DSSE envelopes, the rest is plain Python.

It checks everything `kiln verify` checks except TEE reports: a result whose evidence carries a
SEV-SNP or TDX report is refused with "tee", because this verifier cannot check vendor chains (and a
verifier that cannot check something says so and refuses by default).
"""
import base64
import copy
import hashlib
import json

from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey

IN_TOTO = "application/vnd.in-toto+json"
CLAIMS = "application/vnd.kiln.evidence-claims+json"


class Refused(Exception):
    def __init__(self, step, message):
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message


def sslib_key(key_hex):
    return SSlibKey(hashlib.sha256(bytes.fromhex(key_hex)).hexdigest(), "ed25519", "ed25519", {"public": key_hex})


def open_envelope(d, key_hex, payload_type):
    if d is None:
        raise Refused("claims", "no claims envelope (evidence version 1 carries unsigned claims)")
    env = Envelope.from_dict(copy.deepcopy(d))
    if env.payload_type != payload_type:
        raise Refused("signature", f"payload type {env.payload_type}, expected {payload_type}")
    try:
        env.verify([sslib_key(key_hex)], 1)
    except Exception as e:  # securesystemslib raises VerificationError
        raise Refused("signature", f"{payload_type} envelope does not verify: {e}")
    return env.payload


def report_data(binding):
    nonce = bytes.fromhex(binding["nonce"])
    data = (b"kiln-evidence-v1\x00" + len(nonce).to_bytes(4, "big") + nonce
            + bytes.fromhex(binding["provenance_sha256"]) + bytes.fromhex(binding["manifest_sha256"])
            + bytes.fromhex(binding["public_key"]))
    return hashlib.sha512(data).hexdigest()


def sha(b):
    return hashlib.sha256(b).hexdigest()


def verify(files, nonce, trusted_key_hex, allow_tee_none=False):
    """files: path -> bytes of every regular file in the result (directories omitted);
    symlinks and other special entries must have been refused by the caller."""
    for name in ("evidence.json", "provenance.json", "manifest.json"):
        if name not in files:
            raise Refused("files", f"{name} is missing")
    try:
        ev = json.loads(files["evidence.json"])
    except ValueError as e:
        raise Refused("files", f"evidence.json is not JSON: {e}")
    if ev.get("version") != 2:
        raise Refused("claims", f"evidence version {ev.get('version')} carries unsigned claims")
    signer = ev["binding"]["public_key"]
    payload = open_envelope(ev["dsse"], signer, IN_TOTO)
    claims = json.loads(open_envelope(ev.get("claims"), signer, CLAIMS))
    report = base64.b64decode(ev["report"]) if ev.get("report") else None
    aux = base64.b64decode(ev["aux"]) if ev.get("aux") else None
    for field, same in [("tee", ev["tee"] == claims["tee"]), ("provider", ev["provider"] == claims["provider"]),
                        ("report", (sha(report) if report is not None else None) == claims.get("report_sha256")),
                        ("aux", (sha(aux) if aux is not None else None) == claims.get("aux_sha256")),
                        ("report_data", ev["report_data"] == claims["report_data"]),
                        ("binding", ev["binding"] == claims["binding"])]:
        if not same:
            raise Refused("claims", f"evidence.json's {field} differs from the signed claims")
    if payload != files["provenance.json"]:
        raise Refused("payload", "the signed payload differs from provenance.json")
    b = claims["binding"]
    if b["provenance_sha256"] != sha(files["provenance.json"]):
        raise Refused("binding", "provenance_sha256 does not match provenance.json")
    if b["manifest_sha256"] != sha(files["manifest.json"]):
        raise Refused("binding", "manifest_sha256 does not match manifest.json")
    if report_data(b) != claims["report_data"]:
        raise Refused("binding", "report_data does not recompute from the binding")
    if claims["tee"] != "none":
        raise Refused("tee", f"a {claims['tee']} report: this verifier cannot check TEE reports, so it refuses them")
    if not allow_tee_none:
        raise Refused("tee", "tee none: only the farm key vouches for it")
    if signer != trusted_key_hex:
        raise Refused("trust", f"signed by key {sha(bytes.fromhex(signer))}, which is not the trusted key")
    prov = json.loads(files["provenance.json"])
    manifest = json.loads(files["manifest.json"])
    for where, n in [("evidence", b["nonce"]), ("provenance", prov["predicate"]["buildDefinition"]["externalParameters"]["nonce"]),
                     ("manifest", manifest["inputs"]["nonce"])]:
        if n.lower() != nonce.lower():
            raise Refused("nonce", f"nonce in the {where} is {n}, expected {nonce}")
    listed = {}
    for f in manifest["files"]:
        listed[f["path"]] = f
    present = set(files) - {"evidence.json", "manifest.json"}
    for path, f in listed.items():
        if path not in files:
            raise Refused("manifest", f"{path} is listed but missing")
        if sha(files[path]) != f["sha256"] or len(files[path]) != f["size"]:
            raise Refused("manifest", f"{path} does not match its manifest digest")
    extra = sorted(present - set(listed))
    if extra:
        raise Refused("manifest", f"{extra[0]} is not in the manifest")
    subjects = {s["name"]: s["digest"]["sha256"] for s in prov["subject"]}
    artifacts = {p: f["sha256"] for p, f in listed.items() if p.startswith("artifacts/")}
    if subjects != artifacts:
        raise Refused("subjects", "provenance subjects are not exactly artifacts/")
    return True
