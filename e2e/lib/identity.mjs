// What the upstream received from the gateway: never the client's token or cookies; instead the
// X-Ezforge-* identity headers and an identity JWT signed with a key from ezForge's JWKS, which
// the upstream can check (docs/gateway-scopes.md).

import assert from 'node:assert/strict';
import { createPublicKey, verify } from 'node:crypto';
import { claims, jwtHeader } from './client.mjs';

/** Verifies an ES256 JWT against a JWKS; returns its claims (throws when it does not verify). */
export function verifyEs256(jwt, jwks) {
  const header = jwtHeader(jwt);
  assert.equal(header.alg, 'ES256');
  const jwk = jwks.keys.find((k) => k.kid === header.kid);
  assert.ok(jwk, `the JWT's key ${header.kid} is in the JWKS`);
  const [h, p, s] = jwt.split('.');
  const ok = verify(
    'sha256',
    Buffer.from(`${h}.${p}`),
    { key: createPublicKey({ key: jwk, format: 'jwk' }), dsaEncoding: 'ieee-p1363' },
    Buffer.from(s, 'base64url'),
  );
  assert.ok(ok, 'the JWT signature verifies');
  return claims(jwt);
}

/**
 * Checks the requests the upstream tap saw after index `from`: none carries an Authorization
 * header or a cookie; every one carries the subject, client id and scopes of the caller and an
 * identity JWT (typ `ezforge-identity+jwt`, signed by ezForge, `aud` = the resource URI and the
 * URL it was sent to, a lifetime of at most 60 s). Returns how many it checked.
 */
export async function assertUpstreamSawIdentity(tap, from, { ezforgeUrl, resource, subject, clientId }) {
  const seen = tap.exchanges.slice(from);
  assert.ok(seen.length > 0, 'requests reached the upstream');
  const jwks = await (await fetch(`${ezforgeUrl}/jwks.json`)).json();
  for (const e of seen) {
    const h = e.headers;
    const what = `${e.method} ${e.path} at the upstream`;
    // assert.ok, not equal: a failure must not print the token it found.
    assert.ok(h.authorization === undefined, `${what}: no Authorization header (the client's token stays at the gateway)`);
    assert.ok(h.cookie === undefined, `${what}: no cookie`);
    assert.equal(h['x-ezforge-subject'], subject, `${what}: X-Ezforge-Subject`);
    assert.equal(h['x-ezforge-client-id'], clientId, `${what}: X-Ezforge-Client-Id`);
    assert.ok((h['x-ezforge-scopes'] ?? '').split(' ').includes('mcp:read'), `${what}: X-Ezforge-Scopes`);
    const identity = h['x-ezforge-identity'];
    assert.ok(identity, `${what}: X-Ezforge-Identity`);
    assert.equal(jwtHeader(identity).typ, 'ezforge-identity+jwt');
    const c = verifyEs256(identity, jwks);
    assert.equal(c.iss, ezforgeUrl);
    assert.deepEqual(c.aud, [resource, tap.url]);
    assert.equal(c.sub, subject);
    assert.equal(c.client_id, clientId);
    assert.ok(c.exp - c.iat <= 60, 'a short-lived identity');
    assert.ok(c.iat * 1000 <= e.at + 1000 && c.exp * 1000 >= e.at - 1000, 'valid when it was sent');
  }
  return seen.length;
}
