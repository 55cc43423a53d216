// BYOA with a real identity provider: oidc-provider on loopback as the customer's IdP (resource
// indicators, JWT access tokens); two servers switched to `byoa` with the documentation's
// `ezforge servers update … --auth-mode byoa …` command; the official SDK client obtains a token
// from the IdP (discovery through ezForge's metadata, registration, sign-in and consent at the
// IdP) and calls tools through the gateway; a token from the same IdP for the other server is
// refused; the IdP rotates its signing key, twice, and calls keep working.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { auth } from '@modelcontextprotocol/sdk/client/auth.js';
import { Browser } from '../lib/browser.mjs';
import {
  UnauthorizedError,
  claims,
  connectWithOAuth,
  hops,
  jwtHeader,
  recordingFetch,
  TestOAuthProvider,
  textOf,
} from '../lib/client.mjs';
import { Developer, newPassword, startEzforge } from '../lib/ezforge.mjs';
import { challengeParams, find } from '../lib/managed.mjs';
import { baseEnv, start } from '../lib/proc.mjs';
import { assertUpstreamSawIdentity } from '../lib/identity.mjs';
import { startEverything, tapUpstream } from '../lib/upstream.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const PROJECT = 'byoa-project';
const MAIN = 'byoa-main';
const OTHER = 'byoa-other';
const IDP_SUB = 'idp-user-7f3a';

async function startIdp(resources, user) {
  const admin = randomBytes(16).toString('base64url');
  const proc = await start('oidc-provider', process.execPath, [join(here, '..', 'lib', 'idp.mjs')], {
    env: baseEnv({
      E2E_IDP_RESOURCES: JSON.stringify(resources),
      E2E_IDP_EMAIL: user.email,
      E2E_IDP_PASSWORD: user.password,
      E2E_IDP_ADMIN: admin,
    }),
    ready: (line) => (line.startsWith('{') ? JSON.parse(line) : undefined),
  });
  const config = proc.match;
  const adminCall = async (method, path) => {
    const r = await fetch(`${config.issuer}${path}`, { method, headers: { 'x-e2e-admin': admin } });
    assert.equal(r.status, 200, `${method} ${path}`);
    return r.json();
  };
  return {
    ...config,
    stop: proc.stop,
    promote: () => adminCall('POST', '/e2e/admin/promote'),
    rotateNow: () => adminCall('POST', '/e2e/admin/rotate-now'),
    jwksFetches: async () => (await adminCall('GET', '/e2e/admin/stats')).jwks_fetches,
  };
}

/** A raw MCP initialize with `token`; resolves with the status and the challenge, if any. */
async function presentToken(url, token) {
  const resp = await fetch(url, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${token}`,
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
    },
    body: JSON.stringify({
      jsonrpc: '2.0',
      id: 1,
      method: 'initialize',
      params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'e2e-raw', version: '1.0.0' } },
    }),
  });
  await resp.body?.cancel();
  return { status: resp.status, challenge: resp.headers.get('www-authenticate') };
}

function sdkProvider(browser, port) {
  const redirect = `http://127.0.0.1:${port}/callback`;
  return new TestOAuthProvider({
    redirectUrl: redirect,
    browser,
    clientMetadata: {
      client_name: `ezForge e2e SDK client (BYOA ${port})`,
      redirect_uris: [redirect],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
      application_type: 'native',
    },
  });
}

describe('BYOA: oidc-provider as the customer IdP, the SDK client through the gateway', () => {
  let upstream;
  let tap;
  let tapFrom;
  let ezforge;
  let dev;
  let idp;
  let mainUrl;
  let otherUrl;
  let browser;
  let provider;
  let recorder;
  let client;
  let client2;

  before(async () => {
    upstream = await startEverything();
    tap = await tapUpstream(upstream);
    ezforge = await startEzforge();
    dev = await Developer.signUp(ezforge.url);
    mainUrl = await dev.mcpServer(PROJECT, MAIN, tap.url);
    tapFrom = tap.exchanges.length;
    await dev.createServer(PROJECT, OTHER, `${OTHER} server`);
    await dev.deploy(OTHER, upstream.url);
    otherUrl = `${ezforge.url}/mcp/${OTHER}`;
    const user = { email: 'alice@customer.example', password: newPassword() };
    idp = await startIdp([mainUrl, otherUrl], user);
    browser = new Browser(user);
  });

  after(async () => {
    await client?.close().catch(() => {});
    await client2?.close().catch(() => {});
    await ezforge?.stop();
    await idp?.stop();
    await tap?.stop();
    await upstream?.stop();
  });

  it("the servers are switched to byoa with the documentation's command", async () => {
    for (const slug of [MAIN, OTHER]) {
      const r = await dev.cli([
        'servers', 'update', slug,
        '--auth-mode', 'byoa',
        '--byoa-issuer', idp.issuer,
        '--byoa-jwks-uri', idp.jwks_uri,
        '--byoa-authorization-endpoint', idp.authorization_endpoint,
        '--byoa-token-endpoint', idp.token_endpoint,
      ]);
      assert.equal(r.code, 0, `ezforge servers update exited ${r.code}: ${r.stderr}`);
      const got = await dev.cli(['servers', 'get', slug, '--json']);
      assert.equal(got.code, 0, got.stderr);
      const server = JSON.parse(got.stdout);
      assert.equal(server.auth_mode, 'byoa');
      assert.deepEqual(server.byoa, {
        issuer: idp.issuer,
        jwks_uri: idp.jwks_uri,
        authorization_endpoint: idp.authorization_endpoint,
        token_endpoint: idp.token_endpoint,
      });
    }
  });

  it('the SDK gets a token from the IdP and calls tools through the gateway', async () => {
    recorder = recordingFetch();
    provider = sdkProvider(browser, 33431);
    const conn = await connectWithOAuth(mainUrl, provider, recorder);
    client = conn.client;
    const { log } = recorder;
    assert.ok(conn.firstError instanceof UnauthorizedError);

    const [first] = log;
    assert.equal(`${first.method} ${first.url.href}`, `POST ${mainUrl}`);
    assert.equal(first.status, 401);
    const challenge = challengeParams(first.wwwAuthenticate);
    assert.equal(challenge.resource_metadata, `${ezforge.url}/.well-known/oauth-protected-resource/mcp/${MAIN}`);
    const [prm] = find(log, 'GET', `/.well-known/oauth-protected-resource/mcp/${MAIN}`);
    assert.equal(prm.status, 200);
    assert.equal(prm.response.resource, mainUrl);
    assert.deepEqual(prm.response.authorization_servers, [idp.issuer], 'the metadata names the customer IdP');

    // Everything OAuth happened at the IdP; ezForge only answered the MCP endpoint and its metadata.
    const atEzforge = log.filter((e) => e.url.origin === ezforge.url).map((e) => e.path);
    for (const p of atEzforge) {
      assert.ok(p === `/mcp/${MAIN}` || p.startsWith('/.well-known/oauth-protected-resource'), `no ${p} at ezForge`);
    }
    const asm = log.find((e) => e.url.origin === idp.issuer && e.path.startsWith('/.well-known/') && e.status === 200);
    assert.ok(asm, `the SDK read the IdP's metadata: ${hops(log)}`);
    assert.equal(asm.response.issuer, idp.issuer);
    const reg = log.find((e) => e.method === 'POST' && e.url.href === idp.registration_endpoint);
    assert.equal(reg?.status, 201, `registered at the IdP: ${hops(log)}`);

    const authz = provider.authorizationUrls[0];
    assert.equal(authz.origin + authz.pathname, idp.authorization_endpoint);
    assert.equal(authz.searchParams.get('resource'), mainUrl);
    assert.deepEqual(
      browser.pages.map((p) => p.title),
      ['Sign in to Customer IdP', 'Authorize'],
      'the person signed in and consented at the IdP',
    );
    assert.ok(browser.pages[1].text.includes(mainUrl), 'the IdP consent names the resource');

    const exchange = log.find((e) => e.url.href === idp.token_endpoint && e.form?.grant_type === 'authorization_code');
    assert.equal(exchange?.status, 200, `code exchanged at the IdP: ${hops(log)}`);
    assert.equal(exchange.form.resource, mainUrl);
    const token = provider.tokens().access_token;
    const header = jwtHeader(token);
    assert.equal(header.alg, 'RS256');
    assert.equal(header.typ, 'at+jwt');
    assert.equal(header.kid, idp.signing_kid);
    const c = claims(token);
    assert.equal(c.iss, idp.issuer);
    assert.deepEqual([c.aud].flat(), [mainUrl]);
    assert.equal(c.sub, IDP_SUB);
    assert.equal(c.client_id, reg.response.client_id);
    assert.ok(c.scope.split(' ').includes('mcp:write'), `scope ${c.scope}`);

    const { tools } = await client.listTools();
    const names = tools.map((t) => t.name);
    for (const n of ['echo', 'get-sum']) assert.ok(names.includes(n), `tools/list has ${n}: ${names}`);
    const echo = await client.callTool({ name: 'echo', arguments: { message: 'byoa' } });
    assert.equal(textOf(echo), 'Echo: byoa');
    const fetches = await idp.jwksFetches();
    assert.ok(fetches.length >= 1, "ezForge fetched the IdP's JWKS");
    // The upstream gets the IdP's subject and client id from ezForge, never the IdP's token.
    await assertUpstreamSawIdentity(tap, tapFrom, { ezforgeUrl: ezforge.url, resource: mainUrl, subject: IDP_SUB, clientId: c.client_id });
  });

  it('a token from the same IdP for another audience is refused', async () => {
    // The same person, another client session, a token for the other BYOA server.
    const rec2 = recordingFetch();
    const provider2 = sdkProvider(browser, 33432);
    ({ client: client2 } = await connectWithOAuth(otherUrl, provider2, rec2));
    const other = provider2.tokens().access_token;
    const co = claims(other);
    const cm = claims(provider.tokens().access_token);
    assert.equal(co.iss, cm.iss, 'same issuer');
    assert.equal(co.sub, cm.sub, 'same user');
    assert.deepEqual([co.aud].flat(), [otherUrl], 'another audience');
    // It is a good token where it belongs...
    const sum = await client2.callTool({ name: 'get-sum', arguments: { a: 1, b: 2 } });
    assert.equal(textOf(sum), 'The sum of 1 and 2 is 3.');
    // ...and refused by the server it was not issued for, while that server's own token passes.
    const refused = await presentToken(mainUrl, other);
    assert.equal(refused.status, 401);
    assert.equal(challengeParams(refused.challenge).error, 'invalid_token');
    assert.equal((await presentToken(mainUrl, provider.tokens().access_token)).status, 200);
    assert.equal((await presentToken(otherUrl, provider.tokens().access_token)).status, 401);
  });

  it('the IdP rotates to the key it had published ahead: calls keep working', async () => {
    const fetchesBefore = (await idp.jwksFetches()).length;
    const rotated = await idp.promote();
    assert.notEqual(rotated.signing_kid, idp.signing_kid);
    const from = recorder.log.length;
    // The client refreshes its token, as a client does when its token nears expiry.
    assert.equal(await auth(provider, { serverUrl: mainUrl, fetchFn: recorder.fetch }), 'AUTHORIZED');
    const refresh = recorder.log.slice(from).find((e) => e.form?.grant_type === 'refresh_token');
    assert.equal(refresh?.status, 200, `refreshed at the IdP: ${hops(recorder.log.slice(from))}`);
    assert.equal(jwtHeader(provider.tokens().access_token).kid, rotated.signing_kid, 'the new token is signed with the new key');
    const echo = await client.callTool({ name: 'echo', arguments: { message: 'after rotation' } });
    assert.equal(textOf(echo), 'Echo: after rotation');
    assert.equal((await idp.jwksFetches()).length, fetchesBefore, 'the gateway already had the key');
  });

  it('the IdP rotates to a key it had not published: the gateway refetches the JWKS, calls keep working', async (t) => {
    const rotated = await idp.rotateNow();
    const from = recorder.log.length;
    assert.equal(await auth(provider, { serverUrl: mainUrl, fetchFn: recorder.fetch }), 'AUTHORIZED');
    const refresh = recorder.log.slice(from).find((e) => e.form?.grant_type === 'refresh_token');
    assert.equal(refresh?.status, 200);
    const token = provider.tokens().access_token;
    assert.equal(jwtHeader(token).kid, rotated.signing_kid);

    const fetches = await idp.jwksFetches();
    // The gateway's last JWKS fetch was a routine one, so a token naming a key it has not seen
    // makes it refetch at once (the 30 s cool-down only follows such refetches).
    const probe = await presentToken(mainUrl, token);
    assert.equal(probe.status, 200, `a token signed with the new key is accepted at once (HTTP ${probe.status})`);
    const echo = await client.callTool({ name: 'echo', arguments: { message: 'after an unannounced rotation' } });
    assert.equal(textOf(echo), 'Echo: after an unannounced rotation');
    const after = await idp.jwksFetches();
    assert.equal(after.length, fetches.length + 1, 'the gateway fetched the JWKS once more for the new key');
  });
});
