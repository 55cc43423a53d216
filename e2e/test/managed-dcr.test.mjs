// The official TypeScript SDK client against ezForge fronting server-everything, with dynamic
// client registration (the SDK's OAuth example's client metadata: client_secret_post): 401,
// discovery, registration, authorize (sign-in + consent over HTTP), token, tools/list,
// tools/call; refresh after the short-lived access token expires; the grant revoked through /v1
// and the client refused.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { UnauthorizedError, connectWithOAuth, hops, TestOAuthProvider } from '../lib/client.mjs';
import { assertUpstreamSawIdentity } from '../lib/identity.mjs';
import {
  assertAuthorization,
  assertCodeExchange,
  assertDiscovery,
  assertPages,
  assertProgressStreams,
  assertRefreshKeepsWorking,
  assertRevocationRefuses,
  assertToolsWork,
  find,
  managedWorld,
} from '../lib/managed.mjs';

const REDIRECT = 'http://127.0.0.1:33419/callback';
const CLIENT_NAME = 'ezForge e2e SDK client (DCR)';

describe('TypeScript SDK, managed mode, dynamic client registration', () => {
  let world;
  let provider;
  let client;
  let clientId;

  before(async () => {
    world = await managedWorld();
    provider = new TestOAuthProvider({
      redirectUrl: REDIRECT,
      browser: world.browser,
      clientMetadata: {
        client_name: CLIENT_NAME,
        redirect_uris: [REDIRECT],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_post',
      },
    });
  });

  after(async () => {
    await client?.close().catch(() => {});
    await world?.stop();
  });

  it('connects: 401, discovery, registration, sign-in and consent, token, initialize', async () => {
    const { log } = world.recorder;
    const conn = await connectWithOAuth(world.mcpUrl, provider, world.recorder);
    client = conn.client;
    assert.ok(conn.firstError instanceof UnauthorizedError, 'the first connect needed authorization');

    const { asm } = assertDiscovery(world, log);
    assert.equal(asm.registration_endpoint, `${world.ezforge.url}/register`);

    const regs = find(log, 'POST', '/register');
    assert.equal(regs.length, 1, `one registration: ${hops(log)}`);
    const [reg] = regs;
    assert.equal(reg.status, 201);
    assert.equal(reg.json.client_name, CLIENT_NAME);
    assert.deepEqual(reg.response.redirect_uris, [REDIRECT]);
    assert.equal(reg.response.token_endpoint_auth_method, 'client_secret_post');
    assert.deepEqual([...reg.response.grant_types].sort(), ['authorization_code', 'refresh_token']);
    assert.ok(reg.response.client_secret, 'a confidential client gets a secret');
    clientId = reg.response.client_id;
    assert.ok(clientId);
    assert.equal(provider.clientInformation().client_id, clientId);

    assertAuthorization(world, provider, clientId);
    assertPages(world, world.browser, { clientName: CLIENT_NAME, clientId });

    const { form } = assertCodeExchange(world, log, provider, clientId);
    assert.equal(form.client_id, clientId, 'client_secret_post: client_id in the body');
    assert.ok(form.client_secret === reg.response.client_secret, 'client_secret_post: the secret in the body');

    const init = log.filter((e) => e.method === 'POST' && e.path === '/mcp/everything' && e.json?.method === 'initialize');
    assert.deepEqual(
      init.map((e) => e.status),
      [401, 200],
      'initialize: refused without a token, answered with one',
    );
    assert.equal(client.getServerVersion()?.name, 'mcp-servers/everything', 'the upstream answered initialize');
  });

  it('tools/list and tools/call go through the gateway', async () => {
    await assertToolsWork(client, 'dcr');
  });

  it("the upstream gets the caller's identity from ezForge, never the client's token", async () => {
    const checked = await assertUpstreamSawIdentity(world.tap, world.tapFrom, {
      ezforgeUrl: world.ezforge.url,
      resource: world.mcpUrl,
      subject: world.dev.user.id,
      clientId,
    });
    assert.ok(checked >= 4, `initialize, initialized, the GET stream and the calls: ${checked}`);
  });

  it('a tool streaming progress notifications (SSE) goes through', async () => {
    await assertProgressStreams(client);
  });

  it('after the access token expires, the SDK refreshes and keeps working', async () => {
    await assertRefreshKeepsWorking(world, client, provider);
    await assertToolsWork(client, 'dcr, refreshed');
  });

  it('the grant revoked through /v1: the client is refused', async () => {
    await assertRevocationRefuses(world, client, provider, { clientId, UnauthorizedError });
  });
});
