// What a browser can check of a Kiln result (#17): the DSSE signatures over the provenance and the
// evidence claims (Ed25519, WebCrypto), that the signing key is one the gateway serves at /keys (or is
// certified by one: a VM worker's key), the binding (report_data recomputed with SHA-512), every file
// of the manifest with its digest and nothing else, and that the provenance subjects are exactly the
// artifacts. Not checked here, and said so: TEE report signatures and chains, launch measurements —
// `kiln verify` does those.

const utf8 = new TextEncoder();
const text = new TextDecoder();

function hex(bytes) { return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(""); }
function unhex(s) {
  if (!/^([0-9a-f]{2})*$/i.test(s)) throw new Error("not hex: " + s.slice(0, 20));
  return Uint8Array.from(s.match(/../g) || [], (h) => parseInt(h, 16));
}
function unbase64(s) { return Uint8Array.from(atob(s.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0)); }
function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}
function equal(a, b) { return a.length === b.length && a.every((x, i) => x === b[i]); }
async function sha256(bytes) { return hex(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes))); }

/// The files of a .tar.gz (regular files only; pax `path` records honoured).
async function untar(gzipped) {
  const tar = new Uint8Array(await new Response(new Blob([gzipped]).stream().pipeThrough(new DecompressionStream("gzip"))).arrayBuffer());
  const files = new Map();
  let at = 0, paxPath = null;
  while (at + 512 <= tar.length) {
    const header = tar.subarray(at, at + 512);
    if (header.every((b) => b === 0)) break;
    const field = (o, n) => text.decode(header.subarray(o, o + n)).replace(/\0.*$/s, "");
    const size = parseInt(field(124, 12).trim() || "0", 8);
    const type = String.fromCharCode(header[156] || 48);
    const prefix = field(345, 155);
    let name = (prefix ? prefix + "/" : "") + field(0, 100);
    const body = tar.subarray(at + 512, at + 512 + size);
    if (type === "x") {
      const m = text.decode(body).match(/\d+ path=([^\n]*)\n/);
      paxPath = m ? m[1] : null;
    } else {
      if (paxPath) { name = paxPath; paxPath = null; }
      if (type === "0" || type === "\0") files.set(name.replace(/^\.\//, ""), body);
      else if (type !== "5") throw new Error(`${name} is not a regular file or directory (tar type ${type})`);
    }
    at += 512 + Math.ceil(size / 512) * 512;
  }
  return files;
}

function pae(type, payload) {
  const t = utf8.encode(type);
  return concat(utf8.encode(`DSSEv1 ${t.length} `), t, utf8.encode(` ${payload.length} `), payload);
}

async function ed25519(publicKeyHex) {
  return crypto.subtle.importKey("raw", unhex(publicKeyHex), { name: "Ed25519" }, false, ["verify"]);
}

async function verifyEnvelope(envelope, key, expectedType) {
  if (envelope.payloadType !== expectedType) throw new Error(`payloadType ${envelope.payloadType}, expected ${expectedType}`);
  const payload = unbase64(envelope.payload);
  const message = pae(envelope.payloadType, payload);
  for (const s of envelope.signatures || []) {
    if (await crypto.subtle.verify({ name: "Ed25519" }, key, unbase64(s.sig), message)) return payload;
  }
  throw new Error(`the ${expectedType} signature does not verify`);
}

export async function verifyResult(tarball, servedKeys, expectedNonce) {
  const checks = [];
  const report = { ok: false, checks, artifacts: [], provenance: null, error: null };
  const pass = (name, detail) => checks.push({ name, outcome: "pass", detail });
  const skip = (name, detail) => checks.push({ name, outcome: "skipped", detail });
  try {
    const files = await untar(tarball);
    const need = (name) => { const f = files.get(name); if (!f) throw new Error(`${name} is missing`); return f; };
    const evidence = JSON.parse(text.decode(need("evidence.json")));
    const provenanceBytes = need("provenance.json");
    const manifestBytes = need("manifest.json");
    const signer = evidence.binding.public_key;
    const key = await ed25519(signer);
    const payload = await verifyEnvelope(evidence.dsse, key, "application/vnd.in-toto+json");
    const claimsBytes = await verifyEnvelope(evidence.claims, key, "application/vnd.kiln.evidence-claims+json");
    pass("signature", `provenance and claims envelopes signed by the key the binding names (${signer.slice(0, 16)}…)`);
    if (!equal(payload, provenanceBytes)) throw new Error("provenance.json is not the signed payload");
    pass("payload", "provenance.json is the signed payload");
    const claims = JSON.parse(text.decode(claimsBytes));
    if (JSON.stringify(claims.binding) !== JSON.stringify(evidence.binding) || claims.tee !== evidence.tee) throw new Error("evidence.json differs from the signed claims");
    const binding = claims.binding;
    if (binding.provenance_sha256 !== await sha256(provenanceBytes)) throw new Error("the binding names another provenance.json");
    if (binding.manifest_sha256 !== await sha256(manifestBytes)) throw new Error("the binding names another manifest.json");
    const nonce = unhex(binding.nonce);
    const length = new Uint8Array([0, 0, (nonce.length >> 8) & 255, nonce.length & 255]);
    const reportData = hex(new Uint8Array(await crypto.subtle.digest("SHA-512", concat(utf8.encode("kiln-evidence-v1"), new Uint8Array([0]), length, nonce,
      unhex(binding.provenance_sha256), unhex(binding.manifest_sha256), unhex(binding.public_key)))));
    if (reportData !== claims.report_data) throw new Error("report_data does not recompute from the binding");
    pass("binding", "report_data = SHA-512(nonce, provenance, manifest, key) recomputes");
    // Trust: a key the gateway serves, or one a served key certified (a VM worker's in-memory key).
    const served = servedKeys.map((k) => k.public_key);
    if (served.includes(signer)) {
      pass("trust", "the signing key is one this gateway serves at /keys (the gateway vouches for itself: pin the key with kiln verify --key)");
    } else if (evidence.certificate) {
      const certificate = evidence.certificate;
      let certified = null;
      for (const issuer of served) {
        try { certified = JSON.parse(text.decode(await verifyEnvelope(certificate, await ed25519(issuer), "application/vnd.kiln.worker-certificate+json"))); break; } catch (_) { /* next key */ }
      }
      if (!certified) throw new Error("the worker certificate is not signed by a key this gateway serves");
      if (certified.public_key !== signer) throw new Error("the worker certificate certifies another key");
      pass("trust", `the signing key is worker ${certified.worker_id}'s, certified by a key this gateway serves until ${certified.not_after}`);
    } else {
      throw new Error("the signing key is not one this gateway serves, and no certificate vouches for it");
    }
    if (evidence.tee === "none") skip("tee", "no TEE report: only the farm key vouches for this result");
    else skip("tee", `a ${evidence.tee} report is present; its signature and certificate chain are not checked in a browser: run kiln verify`);
    if (expectedNonce) {
      if (binding.nonce !== expectedNonce.toLowerCase()) throw new Error(`the nonce is ${binding.nonce}, you sent ${expectedNonce}`);
      pass("nonce", "the evidence carries the nonce this browser sent");
    } else {
      skip("nonce", `the evidence carries nonce ${binding.nonce}: compare it with the one you sent`);
    }
    const manifest = JSON.parse(text.decode(manifestBytes));
    const listed = new Set();
    for (const f of manifest.files) {
      const bytes = files.get(f.path);
      if (!bytes) throw new Error(`${f.path} is listed in manifest.json but missing`);
      if (await sha256(bytes) !== f.sha256) throw new Error(`${f.path} does not have the digest manifest.json lists`);
      listed.add(f.path);
      if (f.path.startsWith("artifacts/")) report.artifacts.push({ path: f.path, sha256: f.sha256 });
    }
    for (const name of files.keys()) {
      if (!listed.has(name) && name !== "manifest.json" && name !== "evidence.json") throw new Error(`${name} is in the result but not in manifest.json`);
    }
    pass("manifest", `${manifest.files.length} listed files present with their digests (recomputed here), no other file`);
    const statement = JSON.parse(text.decode(provenanceBytes));
    const subjects = Object.fromEntries(statement.subject.map((s) => [s.name, s.digest.sha256]));
    const artifacts = Object.fromEntries(report.artifacts.map((a) => [a.path, a.sha256]));
    if (JSON.stringify(Object.keys(subjects).sort()) !== JSON.stringify(Object.keys(artifacts).sort()) || Object.keys(subjects).some((k) => subjects[k] !== artifacts[k])) {
      throw new Error("the provenance subjects are not exactly artifacts/");
    }
    pass("subjects", "provenance subjects are exactly artifacts/");
    const definition = statement.predicate.buildDefinition, run = statement.predicate.runDetails;
    report.provenance = {
      "build type": definition.buildType,
      "source": definition.externalParameters.repository ? `${definition.externalParameters.repository} @ ${definition.externalParameters.ref || "HEAD"}` : (definition.externalParameters.source || {}).name,
      "dependencies": (definition.resolvedDependencies || []).map((d) => d.uri || d.name).join(", "),
      "builder": run.builder.id, "worker": (definition.internalParameters || {}).worker_id || "",
      "isolation": (definition.internalParameters || {}).isolation || "", "started": run.metadata.startedOn, "finished": run.metadata.finishedOn,
      "TEE": evidence.tee,
    };
    report.ok = true;
  } catch (e) {
    report.error = e.message || String(e);
    checks.push({ name: "failed", outcome: "fail", detail: report.error });
  }
  return report;
}
