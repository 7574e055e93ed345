"""Kiln's evidence checked by third-party tools: securesystemslib (DSSE) and in-toto-attestation.

The result under test is made by `kiln pack` (the worker's packaging and signing code) unless
KILN_RESULT / KILN_NONCE point at one produced elsewhere (e.g. by a real build).
"""
import base64
import copy
import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile

import pytest
from google.protobuf import json_format
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey

BIN = os.environ.get("KILN_BIN_DIR", os.path.join(os.path.dirname(__file__), "..", "..", ".build", "debug"))
NONCE = "00112233445566778899aabbccddeeff"


@pytest.fixture(scope="module")
def result():
    if os.environ.get("KILN_RESULT"):
        path, nonce, key_hex = os.environ["KILN_RESULT"], os.environ["KILN_NONCE"], None
        return load(path, nonce, key_hex)
    tmp = tempfile.mkdtemp(prefix="kiln-pytest-")
    art = os.path.join(tmp, "artifacts")
    os.makedirs(os.path.join(art, "bin"))
    with open(os.path.join(art, "bin", "hello"), "wb") as f:
        f.write(b"\x7fELF" + bytes(range(256)) * 16)
    os.chmod(os.path.join(art, "bin", "hello"), 0o755)
    lock = os.path.join(tmp, "Cargo.lock")
    with open(lock, "w") as f:
        f.write("version = 3\n")
    out = os.path.join(tmp, "result.tar.gz")
    key = os.path.join(tmp, "farm.pem")
    subprocess.run([os.path.join(BIN, "kiln"), "pack", art, "--key", key, "--nonce", NONCE, "-o", out, "--lockfile", lock],
                   check=True, capture_output=True)
    shown = subprocess.run([os.path.join(BIN, "kiln"), "keys", "show", key], check=True, capture_output=True, text=True).stdout
    key_hex = next(l.split()[1] for l in shown.splitlines() if l.startswith("hex"))
    return load(out, NONCE, key_hex)


def load(path, nonce, key_hex):
    files = {}
    with tarfile.open(path, "r:gz") as t:
        for m in t.getmembers():
            if m.isfile():
                files[m.name] = t.extractfile(m).read()
    evidence = json.loads(files["evidence.json"])
    if key_hex is None:
        key_hex = evidence["binding"]["public_key"]
    return {"files": files, "evidence": evidence, "nonce": nonce, "key_hex": key_hex}


def sslib_key(result):
    raw = bytes.fromhex(result["key_hex"])
    keyid = hashlib.sha256(raw).hexdigest()
    return SSlibKey(keyid, "ed25519", "ed25519", {"public": result["key_hex"]})


def test_dsse_envelope_verifies_with_public_key(result):
    envelope = Envelope.from_dict(copy.deepcopy(result["evidence"]["dsse"]))
    key = sslib_key(result)
    assert envelope.signatures, "no signatures"
    assert key.keyid in envelope.signatures, "signature keyid must be sha256 of the raw public key"
    verified = envelope.verify([key], 1)
    assert key.keyid in verified


def test_payload_equals_provenance_json(result):
    envelope = Envelope.from_dict(copy.deepcopy(result["evidence"]["dsse"]))
    assert envelope.payload_type == "application/vnd.in-toto+json"
    assert envelope.pae()  # well-formed
    assert envelope.payload == result["files"]["provenance.json"]


def test_statement_and_slsa_predicate_validate(result):
    doc = json.loads(result["files"]["provenance.json"])
    pb = statement_pb2.Statement()
    json_format.Parse(result["files"]["provenance.json"], pb)  # strict: unknown fields are errors
    Statement.copy_from_pb(pb).validate()
    assert pb.predicate_type == "https://slsa.dev/provenance/v1"
    prov = provenance_pb2.Provenance()
    json_format.ParseDict(doc["predicate"], prov)  # strict SLSA v1 field names and casing
    assert prov.build_definition.build_type
    assert prov.run_details.builder.id
    assert prov.run_details.metadata.invocation_id
    assert prov.build_definition.external_parameters["nonce"] == result["nonce"]
    for s in doc["subject"]:
        assert hashlib.sha256(result["files"][s["name"]]).hexdigest() == s["digest"]["sha256"]


def test_binding_recomputes(result):
    ev = result["evidence"]
    b = ev["binding"]
    nonce = bytes.fromhex(b["nonce"])
    data = (b"kiln-evidence-v1\x00" + len(nonce).to_bytes(4, "big") + nonce
            + hashlib.sha256(result["files"]["provenance.json"]).digest()
            + hashlib.sha256(result["files"]["manifest.json"]).digest()
            + bytes.fromhex(b["public_key"]))
    assert hashlib.sha512(data).hexdigest() == ev["report_data"]
    assert b["nonce"] == result["nonce"]


def test_tampered_payload_is_rejected(result):
    d = copy.deepcopy(result["evidence"]["dsse"])
    payload = bytearray(base64.b64decode(d["payload"]))
    payload[20] ^= 1
    d["payload"] = base64.b64encode(bytes(payload)).decode()
    with pytest.raises(Exception):
        Envelope.from_dict(d).verify([sslib_key(result)], 1)
