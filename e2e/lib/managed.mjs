// What the managed-mode scenarios share: the world (server-everything behind a real ezForge with
// a short access-token lifetime), and the checks made on what the SDK client received.

import assert from 'node:assert/strict';
import { Browser } from './browser.mjs';
import { claims, hops, recordingFetch, sleep, textOf } from './client.mjs';
import { Developer, startEzforge } from './ezforge.mjs';
import { startEverything, tapUpstream } from './upstream.mjs';

/** Access tokens live this long in the managed scenarios, so that the client must refresh. */
export const ACCESS_TOKEN_TTL_SECS = 8;
export const PROJECT = 'e2e-project';
export const SLUG = 'everything';
/** The scope ezForge's 401 challenge names, which the SDK asks for. */
export const CHALLENGE_SCOPE = 'mcp:read mcp:write offline_access';

/** server-everything deployed behind a fresh ezForge; `stop()` ends both. */
/**
 * server-everything deployed behind a fresh ezForge, through a tap that records what reaches the
 * upstream (`tap.exchanges`); `stop()` ends them all.
 */
export async function managedWorld({ ezforgeArgs = [], ezforgeEnv = {} } = {}) {
  const upstream = await startEverything();
  const tap = await tapUpstream(upstream);
  const ezforge = await startEzforge({
    args: ['--access-token-ttl-secs', String(ACCESS_TOKEN_TTL_SECS), ...ezforgeArgs],
    env: ezforgeEnv,
  });
  const dev = await Developer.signUp(ezforge.url);
  const mcpUrl = await dev.mcpServer(PROJECT, SLUG, tap.url);
  const browser = new Browser({ email: dev.email, password: dev.password });
  return {
    upstream,
    tap,
    /** Index in `tap.exchanges` of the first request after the deployment's health check. */
    tapFrom: tap.exchanges.length,
    ezforge,
    dev,
    mcpUrl,
    browser,
    recorder: recordingFetch(),
    stop: async () => {
      await ezforge.stop();
      await tap.stop();
      await upstream.stop();
    },
  };
}

/** Parses `Bearer k="v", k2="v2"` into `{ k: 'v', k2: 'v2' }`. */
export function challengeParams(header) {
  assert.ok(header, 'a WWW-Authenticate header');
  assert.match(header, /^Bearer\b/i);
  return Object.fromEntries([...header.matchAll(/([a-z_]+)="([^"]*)"/gi)].map((m) => [m[1], m[2]]));
}

/** The recorded exchanges matching `method` and `path` (a string or a RegExp). */
export function find(log, method, path) {
  return log.filter((e) => e.method === method && (typeof path === 'string' ? e.path === path : path.test(e.path)));
}

/**
 * The discovery the SDK went through before any authorization: the first POST answered 401 with
 * the challenge, the protected-resource metadata, the authorization server metadata.
 */
export function assertDiscovery(world, log) {
  const { mcpUrl, ezforge } = world;
  const mcpPath = new URL(mcpUrl).pathname;
  const first = log[0];
  assert.equal(`${first.method} ${first.path}`, `POST ${mcpPath}`, `the SDK starts with the MCP request: ${hops(log)}`);
  assert.equal(first.status, 401, 'the first request, without a token, is refused');
  assert.ok(first.authorization === undefined, 'the first request carries no token');
  assert.equal(first.json?.method, 'initialize');
  const challenge = challengeParams(first.wwwAuthenticate);
  const prmUrl = `${ezforge.url}/.well-known/oauth-protected-resource${mcpPath}`;
  assert.equal(challenge.resource_metadata, prmUrl);
  assert.equal(challenge.scope, CHALLENGE_SCOPE);

  const [prm] = find(log, 'GET', `/.well-known/oauth-protected-resource${mcpPath}`);
  assert.ok(prm, `the SDK fetched the protected-resource metadata: ${hops(log)}`);
  assert.equal(prm.status, 200);
  assert.equal(prm.response.resource, mcpUrl);
  assert.deepEqual(prm.response.authorization_servers, [ezforge.url]);
  assert.deepEqual(
    [...prm.response.scopes_supported].sort(),
    ['mcp:execute', 'mcp:read', 'mcp:write', 'offline_access'],
  );

  const asm = find(log, 'GET', /^\/\.well-known\/(oauth-authorization-server|openid-configuration)/).find((e) => e.status === 200);
  assert.ok(asm, `the SDK fetched the authorization server metadata: ${hops(log)}`);
  assert.equal(asm.response.issuer, ezforge.url);
  assert.ok(asm.response.code_challenge_methods_supported.includes('S256'));
  return { prm: prm.response, asm: asm.response };
}

/** The authorization request the SDK built and the redirect the person's browser came back with. */
export function assertAuthorization(world, provider, clientId) {
  const { mcpUrl, ezforge } = world;
  assert.equal(provider.authorizationUrls.length, 1, 'the user was sent to authorize once');
  const req = provider.authorizationUrls[0];
  assert.equal(req.origin + req.pathname, `${ezforge.url}/authorize`);
  const q = req.searchParams;
  assert.equal(q.get('response_type'), 'code');
  assert.equal(q.get('client_id'), clientId);
  assert.equal(q.get('code_challenge_method'), 'S256');
  assert.match(q.get('code_challenge'), /^[A-Za-z0-9_-]{43}$/);
  assert.equal(q.get('resource'), mcpUrl);
  assert.equal(q.get('scope'), CHALLENGE_SCOPE);
  assert.equal(q.get('redirect_uri'), provider.redirectUrl);

  const back = provider.callbacks[0];
  assert.equal(back.origin + back.pathname, provider.redirectUrl, 'the browser came back to the redirect URI');
  assert.ok(back.searchParams.get('code'), 'with a code');
  assert.equal(back.searchParams.get('iss'), ezforge.url, 'and iss (RFC 9207)');
}

/** The person saw the sign-in page, then a consent page naming the client, the server and the scopes. */
export function assertPages(world, browser, { clientName, clientId }) {
  const titles = browser.pages.map((p) => p.title);
  assert.equal(browser.pages.length, 2, `sign-in then consent; pages: ${titles}; hops: ${browser.hops}`);
  assert.match(browser.pages[0].text, /Sign in to ezForge/);
  const consent = browser.pages[1].text;
  assert.match(consent, new RegExp(`Allow ${escapeRe(clientName)} to use ${SLUG} server\\?`));
  assert.ok(consent.includes(clientId), 'the consent page shows the client_id');
  assert.ok(consent.includes(world.mcpUrl), 'the consent page shows the resource URI');
  assert.ok(consent.includes(world.dev.email), 'the consent page names the signed-in user');
  for (const s of CHALLENGE_SCOPE.split(' ')) assert.ok(consent.includes(s), `the consent page lists ${s}`);
}

/** Compares secrets without ever putting them in an assertion message. */
export function sameSecret(actual, expected, message) {
  assert.ok(typeof actual === 'string' && actual === expected, message);
}

export function escapeRe(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** The code exchange: what the SDK sent to /token and the tokens it received. */
export function assertCodeExchange(world, log, provider, clientId) {
  const exchanges = find(log, 'POST', '/token').filter((e) => e.form?.grant_type === 'authorization_code');
  assert.equal(exchanges.length, 1, `one code exchange: ${hops(log)}`);
  const [x] = exchanges;
  assert.equal(x.status, 200);
  assert.equal(x.form.resource, world.mcpUrl, 'the token request names the resource');
  assert.equal(x.form.redirect_uri, provider.redirectUrl);
  assert.ok(/^[A-Za-z0-9._~-]{43,128}$/.test(x.form.code_verifier), 'a PKCE verifier of 43 to 128 characters');
  assert.equal(x.response.token_type.toLowerCase(), 'bearer');
  assert.ok(x.response.refresh_token, 'a refresh token was issued (offline_access granted)');
  assert.equal(x.response.expires_in, ACCESS_TOKEN_TTL_SECS);
  const c = claims(x.response.access_token);
  assert.equal(c.iss, world.ezforge.url);
  assert.equal(c.aud, world.mcpUrl);
  assert.equal(c.client_id, clientId);
  assert.equal(c.sub, world.dev.user.id);
  assert.deepEqual(c.scope.split(' ').sort(), CHALLENGE_SCOPE.split(' ').sort());
  assert.equal(c.exp - c.iat, ACCESS_TOKEN_TTL_SECS);
  assert.ok(c.gid, 'the token names its grant');
  sameSecret(provider.tokens().access_token, x.response.access_token, 'the SDK keeps the token it received');
  return { form: x.form, claims: c };
}

/** tools/list and tools/call through the gateway, checked against what server-everything answers. */
export async function assertToolsWork(client, label) {
  const { tools } = await client.listTools();
  const names = tools.map((t) => t.name);
  for (const n of ['echo', 'get-sum', 'get-tiny-image', 'trigger-long-running-operation']) {
    assert.ok(names.includes(n), `tools/list has ${n}: ${names}`);
  }
  const echo = await client.callTool({ name: 'echo', arguments: { message: `hello via ezForge (${label})` } });
  assert.equal(textOf(echo), `Echo: hello via ezForge (${label})`);
  assert.notEqual(echo.isError, true);
  const sum = await client.callTool({ name: 'get-sum', arguments: { a: 19, b: 23 } });
  assert.equal(textOf(sum), 'The sum of 19 and 23 is 42.');
  return names;
}

/** A tool that streams progress notifications (SSE) before its result. */
export async function assertProgressStreams(client) {
  const progress = [];
  const result = await client.callTool(
    { name: 'trigger-long-running-operation', arguments: { duration: 0.6, steps: 3 } },
    undefined,
    { onprogress: (p) => progress.push(p) },
  );
  assert.equal(textOf(result), 'Long running operation completed. Duration: 0.6 seconds, Steps: 3.');
  assert.deepEqual(
    progress.map((p) => [p.progress, p.total]),
    [
      [1, 3],
      [2, 3],
      [3, 3],
    ],
  );
}

/**
 * Waits for the access token to expire, calls a tool, and checks that the SDK met a 401, refreshed
 * (rotating the refresh token), retried and got the tool's answer.
 */
export async function assertRefreshKeepsWorking(world, client, provider) {
  const { log } = world.recorder;
  const before = provider.tokens();
  const old = claims(before.access_token);
  const waitMs = old.exp * 1000 - Date.now() + 1200;
  if (waitMs > 0) await sleep(waitMs);
  const from = log.length;
  const echo = await client.callTool({ name: 'echo', arguments: { message: 'after expiry' } });
  assert.equal(textOf(echo), 'Echo: after expiry');
  const after = log.slice(from);

  const refused = after.find((e) => e.method === 'POST' && e.path === new URL(world.mcpUrl).pathname && e.status === 401);
  assert.ok(refused, `the expired token was refused: ${hops(after)}`);
  sameSecret(refused.authorization, `Bearer ${before.access_token}`, 'the refused request carried the expired token');
  assert.equal(challengeParams(refused.wwwAuthenticate).error, 'invalid_token');
  const refreshes = find(after, 'POST', '/token').filter((e) => e.form?.grant_type === 'refresh_token');
  assert.equal(refreshes.length, 1, `one refresh: ${hops(after)}`);
  const [r] = refreshes;
  assert.equal(r.status, 200);
  sameSecret(r.form.refresh_token, before.refresh_token, 'the SDK presented its refresh token');
  assert.equal(r.form.resource, world.mcpUrl, 'the refresh names the resource');
  assert.ok(r.response.refresh_token, 'a new refresh token came back');
  assert.ok(r.response.refresh_token !== before.refresh_token, 'the refresh token was rotated');
  const now = provider.tokens();
  sameSecret(now.access_token, r.response.access_token, 'the SDK uses the refreshed token');
  const fresh = claims(now.access_token);
  assert.equal(fresh.gid, old.gid, 'same grant');
  assert.equal(fresh.aud, world.mcpUrl);
  assert.notEqual(fresh.jti, old.jti);
  assert.ok(fresh.exp > old.exp);
  const retried = after.filter((e) => e.method === 'POST' && e.path === refused.path && e.status === 200 && e.json?.method === 'tools/call');
  assert.ok(retried.length >= 1, `the call was retried with the new token: ${hops(after)}`);
  sameSecret(retried.at(-1).authorization, `Bearer ${now.access_token}`, 'the retry carried the new token');
  return fresh;
}

/**
 * Revokes the client's grant through `/v1` and checks that the client is refused: the access token
 * at once, the refresh token with invalid_grant, after which the SDK goes back to asking the user.
 */
export async function assertRevocationRefuses(world, client, provider, { clientId, UnauthorizedError }) {
  const { dev, recorder, mcpUrl } = world;
  const grants = await dev.grants(PROJECT, SLUG);
  assert.equal(grants.length, 1, 'one grant on the server');
  const [grant] = grants;
  assert.equal(grant.client_id, clientId);
  assert.equal(grant.user_id, dev.user.id);
  assert.equal(grant.resource, mcpUrl);
  assert.equal(grant.revoked_at ?? null, null);
  assert.equal(claims(provider.tokens().access_token).gid, grant.id, "the token's gid is the grant listed by /v1");

  const del = await dev.revokeGrant(PROJECT, SLUG, grant.id);
  assert.ok(del.status === 204 || del.status === 200, `revoking answered ${del.status}`);
  const [revoked] = await dev.grants(PROJECT, SLUG);
  assert.ok(revoked.revoked_at, 'the grant is listed as revoked');

  const token = provider.tokens();
  provider.userConsents = false; // the person does not sign in again
  const asked = provider.authorizationUrls.length;
  const from = recorder.log.length;
  await assert.rejects(client.callTool({ name: 'echo', arguments: { message: 'after revocation' } }), (e) => {
    assert.ok(e instanceof UnauthorizedError, `UnauthorizedError, got ${e?.name}: ${e?.message}`);
    return true;
  });
  const after = recorder.log.slice(from);
  const refused = after.find((e) => e.method === 'POST' && e.path === new URL(mcpUrl).pathname);
  assert.equal(refused.status, 401, `the revoked token was refused: ${hops(after)}`);
  assert.equal(challengeParams(refused.wwwAuthenticate).error, 'invalid_token');
  const refresh = find(after, 'POST', '/token').filter((e) => e.form?.grant_type === 'refresh_token');
  assert.ok(refresh.length >= 1, `the SDK tried its refresh token: ${hops(after)}`);
  for (const r of refresh) {
    assert.equal(r.status, 400);
    assert.equal(r.response.error, 'invalid_grant');
  }
  assert.ok(provider.invalidated.includes('tokens'), 'the SDK dropped its tokens');
  assert.ok(provider.authorizationUrls.length > asked, 'and sent the user back to authorize');
  assert.equal(find(after, 'POST', '/mcp/' + SLUG).filter((e) => e.status === 200).length, 0, 'nothing got through');

  // The same token, presented again by hand: still refused (not only the SDK's view).
  const again = await fetch(mcpUrl, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${token.access_token}`,
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
    },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
  });
  await again.body?.cancel();
  assert.equal(again.status, 401);
}
