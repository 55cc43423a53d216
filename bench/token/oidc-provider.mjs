// Peer OAuth token endpoint for benchmarking: panva/oidc-provider 9.x configured
// like our server (auth code + PKCE S256, RFC 8707 resource indicators, ES256 JWT
// access tokens, rotating refresh tokens, one public client), plus an in-process
// code minter at POST /bench/codes so a driver never needs the login/consent UI.
//
// stdout: exactly one JSON line once listening. Everything else goes to stderr.
// Env: BENCH_VERBOSE=1     keep oidc-provider's dev notices (on stderr)
//      BENCH_STOCK_STORE=1 use oidc-provider's stock in-memory store (an LRU that
//                          keeps only ~1000-2000 entries; see README)
//      BENCH_CODE_TTL      authorization code lifetime in seconds (default 600)

import * as crypto from 'node:crypto';
import * as http from 'node:http';

// oidc-provider prints dev notices with console.warn (stderr) and console.info
// (STDOUT!), some at import time, some lazily on first use. Route both to stderr,
// dropping the "oidc-provider NOTICE/WARNING" ones unless BENCH_VERBOSE is set.
// This has to happen before the (dynamic) import below.
const verbose = !!process.env.BENCH_VERBOSE;
for (const level of ['info', 'warn', 'log']) {
  console[level] = (...args) => {
    if (!verbose && typeof args[0] === 'string' && args[0].includes('oidc-provider ')) return;
    console.error(...args);
  };
}

const { default: Provider, errors } = await import('oidc-provider');
const { default: MemoryAdapter } = await import('oidc-provider/lib/adapters/memory_adapter.js');

const CLIENT_ID = 'bench';
const REDIRECT_URI = 'http://127.0.0.1:9/cb';
const RESOURCE = 'http://127.0.0.1:9/mcp/bench';
const RESOURCE_SCOPE = 'mcp:read mcp:write';
const SCOPE = `offline_access ${RESOURCE_SCOPE}`;
const ACCOUNT_ID = 'user-1';
const MAX_CODES_PER_REQUEST = 10000;

const ACCESS_TOKEN_TTL = 15 * 60;
const REFRESH_TOKEN_TTL = 30 * 24 * 60 * 60;
const CODE_TTL = Number(process.env.BENCH_CODE_TTL) || 600;

// Unbounded store with the interface MemoryAdapter expects (get/set/delete,
// maxAge in ms). Expired entries are dropped on read and by a periodic sweep.
class Store {
  #map = new Map();

  constructor() {
    setInterval(() => {
      const now = Date.now();
      for (const [key, entry] of this.#map) {
        if (entry.expiry !== undefined && entry.expiry <= now) this.#map.delete(key);
      }
    }, 30_000).unref();
  }

  get(key) {
    const entry = this.#map.get(key);
    if (!entry) return undefined;
    if (entry.expiry !== undefined && entry.expiry <= Date.now()) {
      this.#map.delete(key);
      return undefined;
    }
    return entry.value;
  }

  set(key, value, { maxAge } = {}) {
    const expiry = typeof maxAge === 'number' && Number.isFinite(maxAge) ? Date.now() + maxAge : undefined;
    this.#map.set(key, { value, expiry });
    return this;
  }

  has(key) {
    return this.get(key) !== undefined;
  }

  delete(key) {
    return this.#map.delete(key);
  }
}

// One ES256 signing key per run; the only key in the keystore.
const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signingJwk = { ...privateKey.export({ format: 'jwk' }), kid: 'bench-es256', alg: 'ES256', use: 'sig' };

// Listen first (port 0) so the issuer can carry the real port.
let callback = (req, res) => { res.statusCode = 503; res.end(); };
const server = http.createServer((req, res) => {
  if (req.url.startsWith('/bench/')) {
    benchRoute(req, res).catch((err) => {
      console.error('bench route error:', err);
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: 'server_error', error_description: String(err?.message ?? err) }));
    });
    return;
  }
  callback(req, res);
});
server.keepAliveTimeout = 60_000;
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(0, '127.0.0.1', resolve);
});
const { port } = server.address();
const ISSUER = `http://127.0.0.1:${port}`;

const configuration = {
  clients: [{
    client_id: CLIENT_ID,
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: [REDIRECT_URI],
  }],
  jwks: { keys: [signingJwk] },
  clientDefaults: {
    grant_types: ['authorization_code', 'refresh_token'],
    id_token_signed_response_alg: 'ES256',
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
  },
  ...(process.env.BENCH_STOCK_STORE ? {} : (() => {
    const store = new Store();
    return { adapter: (name) => new MemoryAdapter(name, store, 15 /* = default clockTolerance */) };
  })()),
  async findAccount(ctx, sub) {
    return {
      accountId: sub,
      async claims() { return { sub }; },
    };
  },
  features: {
    devInteractions: { enabled: false },
    resourceIndicators: {
      enabled: true,
      // with a single granted resource and no "openid" scope the token endpoint
      // falls back to the granted resource anyway; this makes it explicit.
      defaultResource: async (ctx, client, oneOf) => oneOf ?? RESOURCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resourceIndicator) => {
        if (resourceIndicator !== RESOURCE) throw new errors.InvalidTarget();
        return {
          scope: RESOURCE_SCOPE,
          audience: RESOURCE,
          accessTokenTTL: ACCESS_TOKEN_TTL,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        };
      },
    },
  },
  pkce: { required: () => true }, // oidc-provider 9 only implements S256
  issueRefreshToken: async (ctx, client, source) => client.grantTypeAllowed('refresh_token')
    && source.scopes.has('offline_access'),
  rotateRefreshToken: true,
  ttl: {
    AccessToken: ACCESS_TOKEN_TTL,
    AuthorizationCode: CODE_TTL,
    RefreshToken: REFRESH_TOKEN_TTL, // every rotated refresh token gets a fresh 30 days
    Grant: 365 * 24 * 60 * 60,
    IdToken: 60 * 60,
    Interaction: 60 * 60,
    Session: 14 * 24 * 60 * 60,
    ClientCredentials: 10 * 60,
    DeviceCode: 10 * 60,
    BackchannelAuthenticationRequest: 10 * 60,
    PreAuthorizedCode: 10 * 60,
  },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
};

const provider = new Provider(ISSUER, configuration);
provider.on('server_error', (ctx, err) => console.error('oidc-provider server_error:', err));
callback = provider.callback();

const client = await provider.Client.find(CLIENT_ID);

// What the authorization endpoint would have produced after login + consent for
//   response_type=code&client_id=bench&redirect_uri=REDIRECT_URI&resource=RESOURCE
//   &scope=offline_access mcp:read mcp:write&code_challenge=C&code_challenge_method=S256
// (see lib/helpers/process_response_types.js codeHandler). One Grant per code, as
// separate authorizations would have: refresh-token reuse detection revokes the
// whole grant, and the memory adapter's per-grant index grows with every token.
async function mintCode(codeChallenge) {
  const grant = new provider.Grant({ accountId: ACCOUNT_ID, clientId: CLIENT_ID });
  grant.addOIDCScope('offline_access');
  grant.addResourceScope(RESOURCE, RESOURCE_SCOPE);
  const grantId = await grant.save();

  const code = new provider.AuthorizationCode({
    accountId: ACCOUNT_ID,
    acr: 'urn:mace:incommon:iap:silver',
    amr: ['pwd'],
    authTime: Math.floor(Date.now() / 1000),
    client,
    codeChallenge,
    codeChallengeMethod: 'S256',
    grantId,
    redirectUri: REDIRECT_URI,
    resource: RESOURCE,
    scope: SCOPE,
    // offline_access => expiresWithSession false (the default expiresWithSession
    // policy), so the token endpoint never looks up a Session for these codes.
    expiresWithSession: false,
  });
  return code.save();
}

async function benchRoute(req, res) {
  req.resume();
  const url = new URL(req.url, ISSUER);
  const send = (status, body) => {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify(body));
  };
  if (url.pathname !== '/bench/codes') return send(404, { error: 'not_found' });
  if (req.method !== 'POST') return send(405, { error: 'method_not_allowed' });

  const n = Number(url.searchParams.get('n') ?? '1');
  const challenge = url.searchParams.get('challenge');
  if (!Number.isInteger(n) || n < 1 || n > MAX_CODES_PER_REQUEST) {
    return send(400, { error: 'invalid_request', error_description: `n must be an integer in 1..${MAX_CODES_PER_REQUEST}` });
  }
  if (!challenge || !/^[A-Za-z0-9_-]{43}$/.test(challenge)) {
    return send(400, { error: 'invalid_request', error_description: 'challenge must be base64url(sha256(verifier)) without padding (43 chars)' });
  }

  const codes = new Array(n);
  for (let i = 0; i < n; i += 1) codes[i] = await mintCode(challenge);
  return send(200, codes);
}

const shutdown = () => {
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

process.stdout.write(`${JSON.stringify({
  url: ISSUER,
  token_endpoint: provider.urlFor('token'),
  client_id: CLIENT_ID,
  redirect_uri: REDIRECT_URI,
  resource: RESOURCE,
  scope: SCOPE,
})}\n`);
