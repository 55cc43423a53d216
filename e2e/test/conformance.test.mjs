// Transparency: the MCP conformance suite's server scenarios give the same results through the
// gateway, with a valid token, as directly against the same upstream (server-everything). The
// suite takes only a URL, so a small proxy in front of the gateway adds the token; the token
// comes from ezForge through the SDK's own `auth()` and a person consenting.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { auth } from '@modelcontextprotocol/sdk/client/auth.js';
import { Browser } from '../lib/browser.mjs';
import { claims, recordingFetch, TestOAuthProvider } from '../lib/client.mjs';
import { bearerProxy, node22, outcome, runServerSuite, serverScenarios } from '../lib/conformance.mjs';
import { Developer, startEzforge } from '../lib/ezforge.mjs';
import { startEverything } from '../lib/upstream.mjs';

const REDIRECT = 'http://127.0.0.1:33440/callback';
/** Scenarios server-everything passes on its own: the comparison must not be between two failures only. */
const PASS_DIRECTLY = [
  'server-initialize',
  'ping',
  'logging-set-level',
  'tools-list',
  'tools-call-error',
  'resources-list',
  'resources-subscribe',
  'prompts-list',
  'server-sse-multiple-streams',
];

describe('conformance server scenarios: through the gateway as directly', () => {
  let upstream;
  let ezforge;
  let proxy;
  let node;
  let mcpPath;
  let token;

  before(async () => {
    node = await node22();
    upstream = await startEverything();
    ezforge = await startEzforge();
    const dev = await Developer.signUp(ezforge.url);
    const mcpUrl = await dev.mcpServer('conformance-project', 'conformance', upstream.url);
    mcpPath = new URL(mcpUrl).pathname;

    // A token with every MCP scope, the way an SDK client gets one.
    const provider = new TestOAuthProvider({
      redirectUrl: REDIRECT,
      browser: new Browser({ email: dev.email, password: dev.password }),
      clientMetadata: {
        client_name: 'ezForge e2e conformance runner',
        redirect_uris: [REDIRECT],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'none',
      },
    });
    const { fetch } = recordingFetch();
    assert.equal(await auth(provider, { serverUrl: mcpUrl, fetchFn: fetch }), 'REDIRECT');
    assert.equal(await auth(provider, { serverUrl: mcpUrl, authorizationCode: provider.takeCode(), fetchFn: fetch }), 'AUTHORIZED');
    token = provider.tokens().access_token;
    const c = claims(token);
    assert.equal(c.aud, mcpUrl);
    for (const s of ['mcp:read', 'mcp:write', 'mcp:execute']) assert.ok(c.scope.split(' ').includes(s), `token scope has ${s}`);
    proxy = await bearerProxy(ezforge.url, token);
  });

  after(async () => {
    await proxy?.stop();
    await ezforge?.stop();
    await upstream?.stop();
  });

  it('every server scenario gives the same checks, statuses and messages', async (t) => {
    t.diagnostic(`conformance runs on ${node.version}`);
    const expected = await serverScenarios(node.bin);
    assert.ok(expected.length >= 30, `the suite lists its server scenarios: ${expected}`);

    const direct = await runServerSuite(node.bin, upstream.url);
    const gateway = await runServerSuite(node.bin, `${proxy.origin}${mcpPath}`);
    for (const [label, r] of [['direct', direct], ['gateway', gateway]]) {
      assert.deepEqual([...r.scenarios.keys()].sort(), [...expected].sort(), `${label}: a result for every scenario (${r.out})`);
    }

    // The comparison is not vacuous: server-everything passes these on its own.
    for (const s of PASS_DIRECTLY) {
      const statuses = direct.scenarios.get(s).map((c) => c.status);
      assert.ok(statuses.includes('SUCCESS') && !statuses.includes('FAILURE'), `${s} passes directly: ${statuses}`);
    }

    const differences = [];
    let passed = 0;
    let failed = 0;
    for (const s of expected) {
      const d = outcome(direct.scenarios.get(s));
      const g = outcome(gateway.scenarios.get(s));
      if (JSON.stringify(d) !== JSON.stringify(g)) {
        differences.push(`${s}\n    direct:  ${d.join(', ')}\n    gateway: ${g.join(', ')}`);
      }
      const statuses = direct.scenarios.get(s).map((c) => c.status);
      if (statuses.includes('FAILURE')) failed += 1;
      else passed += 1;
    }
    t.diagnostic(`directly: ${passed} scenarios pass, ${failed} fail (server-everything is not the suite's reference server)`);
    assert.deepEqual(differences, [], `scenarios whose results differ through the gateway:\n${differences.join('\n')}`);

    // Every request went through the gateway with the token, and none was refused for it.
    assert.ok(proxy.exchanges.length > expected.length, 'the gateway run sent requests through the proxy');
    const answered = proxy.exchanges.filter((e) => !e.clientClosed);
    const refused = answered
      .filter((e) => e.status === 401 || e.status === 403 || e.status === 0)
      .map((e) => `${e.method} ${e.path} -> ${e.status}${e.error ? ` (${e.error})` : ''}`);
    assert.deepEqual(refused, [], 'the gateway refused none of the requests (the token was good for all of them)');
  });
});
