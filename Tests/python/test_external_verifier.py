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


# ---------------------------------------------------------------------------------------------
# The tamper table, run against this independent verifier and against `kiln verify` alike.

import shutil
import kiln_verifier


def write_tree(files, root):
    for path, data in files.items():
        full = os.path.join(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)


def kiln_cli_verify(files, nonce, key_hex, links=()):
    tmp = tempfile.mkdtemp(prefix="kiln-tamper-")
    try:
        write_tree(files, tmp)
        for path, target in links:
            os.makedirs(os.path.dirname(os.path.join(tmp, path)), exist_ok=True)
            os.symlink(target, os.path.join(tmp, path))
        keyfile = os.path.join(tmp, "..", os.path.basename(tmp) + ".pub")
        with open(keyfile, "w") as f:
            f.write(key_hex)
        try:
            p = subprocess.run([os.path.join(BIN, "kiln"), "verify", tmp, "--nonce", nonce, "--key", keyfile, "--allow-tee-none", "--json"],
                               capture_output=True, text=True)
        finally:
            os.unlink(keyfile)
        return p.returncode, json.loads(p.stdout)
    finally:
        shutil.rmtree(tmp)


def ev_of(files):
    return json.loads(files["evidence.json"])


def with_ev(files, change):
    ev = ev_of(files)
    change(ev)
    out = dict(files)
    out["evidence.json"] = json.dumps(ev, separators=(",", ":"), sort_keys=True).encode()
    return out


def flip(files, path, offset=None):
    out = dict(files)
    b = bytearray(out[path])
    b[len(b) // 2 if offset is None else offset] ^= 1
    out[path] = bytes(b)
    return out


def flip_sig(envelope_key):
    def change(ev):
        sig = bytearray(base64.b64decode(ev[envelope_key]["signatures"][0]["sig"]))
        sig[7] ^= 1
        ev[envelope_key]["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    return change


def replace_lock_and_rehash(files):
    out = dict(files)
    lock = next(p for p in files if p.startswith("build-config/"))
    out[lock] = b"# attacker's lock file\n"
    manifest = json.loads(out["manifest.json"])
    for f in manifest["files"]:
        if f["path"] == lock:
            f["sha256"], f["size"] = hashlib.sha256(out[lock]).hexdigest(), len(out[lock])
    out["manifest.json"] = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()

    def change(ev):
        ev["binding"]["manifest_sha256"] = hashlib.sha256(out["manifest.json"]).hexdigest()
        ev["report_data"] = kiln_verifier.report_data(ev["binding"])
    return with_ev(out, change)


def fake_tee(ev):
    ev["tee"] = "sev-snp"
    ev["report"] = base64.b64encode(b"\0" * 0x50 + bytes.fromhex(ev["report_data"])).decode()


def resign_with_other_key(files):
    tmp = tempfile.mkdtemp(prefix="kiln-resign-")
    try:
        art = os.path.join(tmp, "artifacts")
        write_tree({p[len("artifacts/"):]: d for p, d in files.items() if p.startswith("artifacts/")}, art)
        out = os.path.join(tmp, "r.tar.gz")
        subprocess.run([os.path.join(BIN, "kiln"), "pack", art, "--key", os.path.join(tmp, "attacker.pem"), "--nonce", NONCE_OF[0], "-o", out],
                       check=True, capture_output=True)
        with tarfile.open(out, "r:gz") as t:
            return {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}
    finally:
        shutil.rmtree(tmp)


NONCE_OF = [NONCE]

TAMPER_CASES = [
    ("flip a byte of provenance.json", lambda f: flip(f, "provenance.json", 40), {"payload"}),
    ("flip a byte of manifest.json", lambda f: flip(f, "manifest.json", 30), {"binding"}),
    ("flip a byte of an artifact", lambda f: flip(f, next(p for p in f if p.startswith("artifacts/"))), {"manifest"}),
    ("flip a byte of build-config", lambda f: flip(f, next(p for p in f if p.startswith("build-config/")), 0), {"manifest"}),
    ("flip a byte of the provenance signature", lambda f: with_ev(f, flip_sig("dsse")), {"signature"}),
    ("flip a byte of the claims signature", lambda f: with_ev(f, flip_sig("claims")), {"signature"}),
    ("add a file", lambda f: {**f, "artifacts/extra": b"evil"}, {"manifest"}),
    ("remove an artifact", lambda f: {p: d for p, d in f.items() if p != next(x for x in f if x.startswith("artifacts/"))}, {"manifest"}),
    ("rename an artifact", lambda f: {(p + "2" if p == next(x for x in f if x.startswith("artifacts/")) else p): d for p, d in f.items()}, {"manifest"}),
    ("replace build-config and re-hash manifest and binding", replace_lock_and_rehash, {"claims"}),
    ("change tee to sev-snp with a made-up report", lambda f: with_ev(f, fake_tee), {"claims"}),
    ("swap the nonce in the binding", lambda f: with_ev(f, lambda ev: ev["binding"].update(nonce="ffff")), {"claims"}),
    ("drop the claims envelope", lambda f: with_ev(f, lambda ev: (ev.pop("claims"), ev.update(version=1))), {"claims"}),
    ("re-sign everything with another key", resign_with_other_key, {"trust"}),
]


def test_genuine_result_passes_both_verifiers(result):
    assert kiln_verifier.verify(result["files"], result["nonce"], result["key_hex"], allow_tee_none=True)
    code, report = kiln_cli_verify(result["files"], result["nonce"], result["key_hex"])
    assert code == 0 and report["ok"], report
    assert report["verdict"] == "no-tee" and report["key_trust"] == "pinned"


@pytest.mark.parametrize("name,tamper,steps", TAMPER_CASES, ids=[c[0] for c in TAMPER_CASES])
def test_tampered_result_is_refused_by_both_verifiers(result, name, tamper, steps):
    NONCE_OF[0] = result["nonce"]
    files = tamper(result["files"])
    with pytest.raises(kiln_verifier.Refused) as refused:
        kiln_verifier.verify(files, result["nonce"], result["key_hex"], allow_tee_none=True)
    assert refused.value.step in steps, str(refused.value)
    code, report = kiln_cli_verify(files, result["nonce"], result["key_hex"])
    assert code == 1 and not report["ok"], report
    assert report["failed_step"] in steps, report
    print(f"TAMPER | {name} | python: {refused.value.step} | kiln verify: {report['failed_step']}: {report['error']}")


def test_wrong_nonce_is_refused_by_both_verifiers(result):
    with pytest.raises(kiln_verifier.Refused) as refused:
        kiln_verifier.verify(result["files"], "ffff", result["key_hex"], allow_tee_none=True)
    assert refused.value.step == "nonce"
    code, report = kiln_cli_verify(result["files"], "ffff", result["key_hex"])
    assert code == 1 and report["failed_step"] == "nonce"


def test_a_symlink_in_the_result_is_refused_by_kiln_verify(result):
    files = dict(result["files"])
    victim = next(p for p in files if p.startswith("artifacts/"))
    del files[victim]
    code, report = kiln_cli_verify(files, result["nonce"], result["key_hex"], links=[(victim, "/etc/hostname")])
    assert code == 1 and report["failed_step"] == "files", report
