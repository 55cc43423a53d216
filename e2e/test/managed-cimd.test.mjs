// The official TypeScript SDK client with a Client ID Metadata Document instead of registration:
// the document is served over https on loopback (a throw-away CA that ezForge is told to trust
// with SSL_CERT_FILE; `--client-documents-allow-private` lets ezForge fetch from 127.0.0.1), the
// SDK presents its URL as client_id. Then the same flow as with registration: token,
// tools/list, tools/call, refresh, revocation.

import assert from 'node:assert/strict';
import { createServer } from 'node:https';
import { after, before, describe, it } from 'node:test';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError, claims, connectWithOAuth, hops, TestOAuthProvider, textOf } from '../lib/client.mjs';
import { assertUpstreamSawIdentity } from '../lib/identity.mjs';
import {
  assertAuthorization,
  assertCodeExchange,
  assertDiscovery,
  assertPages,
  assertRefreshKeepsWorking,
  assertRevocationRefuses,
  assertToolsWork,
  find,
  managedWorld,
} from '../lib/managed.mjs';
import { loopbackCertificate } from '../lib/tls.mjs';

const REDIRECT = 'http://127.0.0.1:33420/callback';
const CLIENT_NAME = 'ezForge e2e SDK client (CIMD)';

/** An https server on 127.0.0.1 serving one Client ID Metadata Document, recording who fetched it. */
async function serveClientDocument(tls) {
  const fetches = [];
  let doc;
  const server = createServer({ key: tls.key, cert: tls.cert }, (req, res) => {
    fetches.push({ method: req.method, path: req.url, userAgent: req.headers['user-agent'] });
    if (req.method === 'GET' && req.url === '/clients/e2e.json') {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=600' });
      res.end(JSON.stringify(doc));
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const url = `https://127.0.0.1:${server.address().port}/clients/e2e.json`;
  doc = {
    client_id: url,
    client_name: CLIENT_NAME,
    client_uri: `https://127.0.0.1:${server.address().port}/`,
    redirect_uris: [REDIRECT],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
  };
  return { url, doc, fetches, stop: () => new Promise((r) => server.close(r)) };
}

describe('TypeScript SDK, managed mode, Client ID Metadata Document on loopback', () => {
  let world;
  let cimd;
  let provider;
  let client;
  let transport;

  before(async () => {
    const tls = await loopbackCertificate();
    cimd = await serveClientDocument(tls);
    world = await managedWorld({
      ezforgeArgs: ['--client-documents-allow-private'],
      ezforgeEnv: { SSL_CERT_FILE: tls.caFile },
    });
    provider = new TestOAuthProvider({
      redirectUrl: REDIRECT,
      browser: world.browser,
      clientMetadataUrl: cimd.url,
      clientMetadata: {
        client_name: CLIENT_NAME,
        redirect_uris: [REDIRECT],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'none',
      },
    });
  });

  after(async () => {
    await client?.close().catch(() => {});
    await world?.stop();
    await cimd?.stop();
  });

  it('connects with its metadata document URL as client_id, without registering', async () => {
    const { log } = world.recorder;
    const conn = await connectWithOAuth(world.mcpUrl, provider, world.recorder);
    ({ client, transport } = conn);
    assert.ok(conn.firstError instanceof UnauthorizedError);

    const { asm } = assertDiscovery(world, log);
    assert.equal(asm.client_id_metadata_document_supported, true);
    assert.equal(find(log, 'POST', '/register').length, 0, `no registration: ${hops(log)}`);
    assert.equal(provider.clientInformation().client_id, cimd.url);

    const docFetches = cimd.fetches.filter((f) => f.path === '/clients/e2e.json');
    assert.ok(docFetches.length >= 1, 'ezForge fetched the document');
    assert.match(docFetches[0].userAgent ?? '', /^ezforge\//, 'with its own user agent');

    assertAuthorization(world, provider, cimd.url);
    assertPages(world, world.browser, { clientName: CLIENT_NAME, clientId: cimd.url });

    const { form, claims } = assertCodeExchange(world, log, provider, cimd.url);
    assert.equal(form.client_id, cimd.url, 'a public client names itself in the body');
    assert.ok(form.client_secret === undefined, 'and has no secret');
    assert.equal(claims.client_id, cimd.url);
  });

  it('tools/list and tools/call go through the gateway', async () => {
    await assertToolsWork(client, 'cimd');
    await assertUpstreamSawIdentity(world.tap, world.tapFrom, {
      ezforgeUrl: world.ezforge.url,
      resource: world.mcpUrl,
      subject: world.dev.user.id,
      clientId: cimd.url,
    });
  });

  it('the client ends its session (DELETE) and connects again with the token it has', async (t) => {
    const sessionId = transport.sessionId;
    assert.ok(sessionId, 'the upstream gave the client a session');
    const from = world.tap.exchanges.length;
    await transport.terminateSession();
    const [del] = world.tap.exchanges.slice(from).filter((e) => e.method === 'DELETE');
    assert.ok(del, 'the DELETE reached the upstream');
    assert.equal(del.headers['mcp-session-id'], sessionId);
    assert.equal(del.status, 200);
    await client.close();

    const logFrom = world.recorder.log.length;
    const stillValid = claims(provider.tokens().access_token).exp * 1000 > Date.now() + 1500;
    transport = new StreamableHTTPClientTransport(new URL(world.mcpUrl), { authProvider: provider, fetch: world.recorder.fetch });
    await client.connect(transport);
    assert.notEqual(transport.sessionId, sessionId, 'a new session');
    const echo = await client.callTool({ name: 'echo', arguments: { message: 'new session' } });
    assert.equal(textOf(echo), 'Echo: new session');
    const again = world.recorder.log.slice(logFrom);
    assert.equal(provider.authorizationUrls.length, 1, 'no new authorization');
    if (stillValid) assert.equal(find(again, 'POST', '/token').length, 0, `no token request: ${hops(again)}`);
    else t.diagnostic('the short-lived access token expired before the reconnection (slow machine): not checking for a refresh');
  });

  it('after the access token expires, the SDK refreshes and keeps working', async () => {
    await assertRefreshKeepsWorking(world, client, provider);
  });

  it('the grant revoked through /v1: the client is refused', async () => {
    await assertRevocationRefuses(world, client, provider, { clientId: cimd.url, UnauthorizedError });
  });
});
