// The token's subprotocol form (docs/auth.md: `jwt.<compact JWT>` or
// `jwt.<base64url of the token>`, offered with the `jwt-auth` marker).
import { test } from "node:test";
import assert from "node:assert/strict";
import { MARKER, base64url, subprotocols, tokenSubprotocol } from "../ws-lifecycle.js";

// RFC 7230 tchar: what a Sec-WebSocket-Protocol entry may contain (src/auth/request.rs).
const TCHARS = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/;
const JWT =
  "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTc5NTAwMDAwMH0.c2lnbmF0dXJlLWJ5dGVz";

test("base64url matches RFC 4648 vectors, unpadded", () => {
  const vectors = { "": "", f: "Zg", fo: "Zm8", foo: "Zm9v", foob: "Zm9vYg", fooba: "Zm9vYmE", foobar: "Zm9vYmFy" };
  for (const [text, encoded] of Object.entries(vectors)) assert.equal(base64url(text), encoded, text);
});

test("base64url encodes UTF-8 and uses - and _ where base64 has + and /", () => {
  const samples = ["\u00fb\u00ff", "?>?>", "é ü 漢字 🙂", "a".repeat(1000), "\u0000\u007f"];
  for (const text of samples) {
    assert.equal(base64url(text), Buffer.from(text, "utf8").toString("base64url"), text);
    assert.doesNotMatch(base64url(text), /[+/=]/);
  }
  assert.equal(base64url("?>?>"), "Pz4_Pg");
});

test("a compact JWT travels raw", () => {
  assert.equal(tokenSubprotocol(JWT), "jwt." + JWT);
  assert.deepEqual(subprotocols(JWT), [MARKER, "jwt." + JWT]);
  assert.equal(MARKER, "jwt-auth");
});

test("any other token travels as base64url, and the server's decoding gives it back", () => {
  const others = [
    "opaque token with spaces",
    "a=b;c",
    "Bearer/xyz",
    "a.b", // two segments: not a compact JWS
    "a.b.c.d.e", // a JWE's shape
    "a..c", // an empty segment
    "abc~def", // all tchars, but the server only reads a compact JWS raw
    "ünïcødé",
  ];
  for (const token of others) {
    const entry = tokenSubprotocol(token);
    assert.match(entry, TCHARS, token);
    assert.ok(entry.startsWith("jwt."), token);
    assert.equal(Buffer.from(entry.slice(4), "base64url").toString("utf8"), token);
  }
});

test("every offered entry is a valid subprotocol token", () => {
  for (const token of [JWT, "x y", "🙂", "a,b", '"quoted"']) {
    for (const entry of subprotocols(token)) assert.match(entry, TCHARS, token);
  }
});

test("no token, no subprotocols (cookie or header authentication)", () => {
  assert.deepEqual(subprotocols(null), []);
  assert.deepEqual(subprotocols(undefined), []);
  assert.deepEqual(subprotocols(""), []);
});
