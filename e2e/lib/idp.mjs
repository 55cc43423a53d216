// The customer's identity provider for the BYOA scenario: `oidc-provider` on 127.0.0.1 (its own
// process), configured for RFC 8707 resource indicators and RFC 9068 JWT access tokens (RS256),
// open dynamic registration, PKCE, refresh tokens, and sign-in + consent pages that work without
// JavaScript. Signing keys can be rotated while it runs (the provider is rebuilt over the same
// storage, so clients, grants and refresh tokens survive).
//
// Environment:
//   E2E_IDP_RESOURCES   JSON array of the resource indicators (audiences) it issues tokens for
//   E2E_IDP_EMAIL, E2E_IDP_PASSWORD   the one user who can sign in
//   E2E_IDP_ADMIN       secret for the /e2e/admin/* routes (header x-e2e-admin)
//   E2E_IDP_AT_TTL      access-token lifetime in seconds (default 300)
// stdout: one JSON line once listening: {issuer, jwks_uri, authorization_endpoint, token_endpoint,
//   registration_endpoint, kids, signing_kid}. Everything else goes to stderr.
//
// Admin routes (POST, header x-e2e-admin):
//   /e2e/admin/promote     the newest published key starts signing (it was published ahead)
//   /e2e/admin/rotate-now  a brand-new key is published and signs at once
// both answer {kids, signing_kid}. GET /e2e/admin/stats answers {jwks_fetches: [{at, user_agent}]}.

import * as crypto from 'node:crypto';
import * as http from 'node:http';

for (const level of ['info', 'warn', 'log']) {
  console[level] = (...args) => {
    if (typeof args[0] === 'string' && args[0].includes('oidc-provider ')) return; // dev notices
    console.error(...args);
  };
}

const { default: Provider, errors } = await import('oidc-provider');
const { default: MemoryAdapter } = await import('oidc-provider/lib/adapters/memory_adapter.js');

const RESOURCES = JSON.parse(process.env.E2E_IDP_RESOURCES || '[]');
const EMAIL = process.env.E2E_IDP_EMAIL;
const PASSWORD = process.env.E2E_IDP_PASSWORD;
const ADMIN = process.env.E2E_IDP_ADMIN;
const AT_TTL = Number(process.env.E2E_IDP_AT_TTL) || 300;
const ACCOUNT_ID = 'idp-user-7f3a';
const RESOURCE_SCOPE = 'mcp:read mcp:write mcp:execute';
if (!EMAIL || !PASSWORD || !ADMIN || !RESOURCES.length) {
  console.error('E2E_IDP_RESOURCES, E2E_IDP_EMAIL, E2E_IDP_PASSWORD and E2E_IDP_ADMIN are required');
  process.exit(2);
}

// One store for every provider instance built here (a rebuilt provider keeps the registered
// clients, sessions, grants and refresh tokens). oidc-provider's own default store is per instance.
class Store {
  #map = new Map();

  get(key) {
    const e = this.#map.get(key);
    if (e && e.expiry !== undefined && e.expiry <= Date.now()) {
      this.#map.delete(key);
      return undefined;
    }
    return e?.value;
  }

  set(key, value, { maxAge } = {}) {
    this.#map.set(key, { value, expiry: Number.isFinite(maxAge) ? Date.now() + maxAge : undefined });
    return this;
  }

  has(key) {
    return this.get(key) !== undefined;
  }

  delete(key) {
    return this.#map.delete(key);
  }
}
const store = new Store();

let keyCounter = 0;
function newKey() {
  keyCounter += 1;
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: `idp-rsa-${keyCounter}`, alg: 'RS256', use: 'sig' };
}

// Published keys, newest first; `signingKid` names the one that signs access tokens.
// The second key is published ahead of use, as an IdP preparing a rotation does.
const first = newKey();
const next = newKey();
let keys = [next, first];
let signingKid = first.kid;
const jwksFetches = [];
const cookieKeys = [crypto.randomBytes(32).toString('base64url')];

let callback = (req, res) => {
  res.statusCode = 503;
  res.end();
};
const server = http.createServer((req, res) => {
  route(req, res).catch((err) => {
    console.error('idp route error:', err);
    if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
    res.end('internal error');
  });
});
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(0, '127.0.0.1', resolve);
});
const ISSUER = `http://127.0.0.1:${server.address().port}`;

function build() {
  const provider = new Provider(ISSUER, {
    jwks: { keys },
    adapter: (name) => new MemoryAdapter(name, store, 15),
    scopes: ['openid', 'offline_access', ...RESOURCE_SCOPE.split(' ')],
    clientDefaults: {
      grant_types: ['authorization_code', 'refresh_token'],
      id_token_signed_response_alg: 'RS256',
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    },
    async findAccount(ctx, sub) {
      if (sub !== ACCOUNT_ID) return undefined;
      return { accountId: sub, async claims() { return { sub, email: EMAIL }; } };
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    features: {
      devInteractions: { enabled: false },
      registration: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (ctx, client, oneOf) => oneOf,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (ctx, resourceIndicator) => {
          if (!RESOURCES.includes(resourceIndicator)) throw new errors.InvalidTarget();
          return {
            scope: RESOURCE_SCOPE,
            audience: resourceIndicator,
            accessTokenTTL: AT_TTL,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256', kid: signingKid } },
          };
        },
      },
    },
    pkce: { required: () => true },
    issueRefreshToken: async (ctx, client, code) =>
      client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access'),
    rotateRefreshToken: true,
    ttl: {
      AccessToken: AT_TTL,
      AuthorizationCode: 300,
      RefreshToken: 24 * 3600,
      Grant: 24 * 3600,
      Session: 3600,
      Interaction: 600,
      IdToken: 3600,
    },
    cookies: { keys: cookieKeys },
  });
  provider.on('server_error', (ctx, err) => console.error('oidc-provider server_error:', err));
  for (const event of ['grant.error', 'registration_create.error', 'authorization.error']) {
    provider.on(event, (ctx, err) => console.error(`oidc-provider ${event}: ${err.message} (${err.error_detail ?? ''})`));
  }
  return provider;
}

let provider = build();
callback = provider.callback();

function rebuild() {
  provider = build();
  callback = provider.callback();
}

function publicKeys() {
  return keys.map((k) => k.kid);
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return Object.fromEntries(new URLSearchParams(body));
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#x27;' })[c]);
}

function page(res, title, body) {
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`<!doctype html><html><head><title>${esc(title)}</title></head><body>${body}</body></html>`);
}

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

async function route(req, res) {
  const url = new URL(req.url, ISSUER);

  if (url.pathname.startsWith('/e2e/admin/')) {
    if (req.headers['x-e2e-admin'] !== ADMIN) return json(res, 403, { error: 'forbidden' });
    if (req.method === 'GET' && url.pathname === '/e2e/admin/stats') return json(res, 200, { jwks_fetches: jwksFetches });
    if (req.method === 'POST' && url.pathname === '/e2e/admin/promote') {
      signingKid = keys[0].kid;
      rebuild();
      return json(res, 200, { kids: publicKeys(), signing_kid: signingKid });
    }
    if (req.method === 'POST' && url.pathname === '/e2e/admin/rotate-now') {
      const k = newKey();
      keys = [k, ...keys];
      signingKid = k.kid;
      rebuild();
      return json(res, 200, { kids: publicKeys(), signing_kid: signingKid });
    }
    return json(res, 404, { error: 'not_found' });
  }

  if (url.pathname === '/jwks') {
    jwksFetches.push({ at: Date.now(), user_agent: req.headers['user-agent'] ?? null });
    return callback(req, res);
  }

  const m = /^\/interaction\/([^/]+)(\/(login|confirm))?$/.exec(url.pathname);
  if (!m) return callback(req, res);
  const uid = m[1];
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return json(res, 400, { error: 'interaction mismatch' });
  const { prompt, params } = details;
  const client = await provider.Client.find(params.client_id);

  if (req.method === 'GET' && !m[2]) {
    if (prompt.name === 'login') {
      return page(
        res,
        'Sign in to Customer IdP',
        `<h1>Sign in to Customer IdP</h1><form method="post" action="/interaction/${esc(uid)}/login">` +
          '<input name="email" type="email"><input name="password" type="password">' +
          '<button type="submit">Sign in</button></form>',
      );
    }
    const resources = Object.keys(prompt.details.missingResourceScopes ?? {});
    return page(
      res,
      'Authorize',
      `<h1>Allow ${esc(client?.clientName ?? params.client_id)} to act as you?</h1>` +
        `<p>Scopes: ${esc(params.scope ?? '')}</p><p>Resources: ${esc(resources.join(' '))}</p>` +
        `<form method="post" action="/interaction/${esc(uid)}/confirm">` +
        '<button type="submit" name="decision" value="allow">Allow</button>' +
        '<button type="submit" name="decision" value="deny">Deny</button></form>',
    );
  }

  if (req.method === 'POST' && m[3] === 'login') {
    const form = await readForm(req);
    const ok =
      form.email === EMAIL &&
      typeof form.password === 'string' &&
      crypto.timingSafeEqual(
        crypto.createHash('sha256').update(form.password).digest(),
        crypto.createHash('sha256').update(PASSWORD).digest(),
      );
    if (!ok) {
      return provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'wrong credentials' });
    }
    return provider.interactionFinished(req, res, { login: { accountId: ACCOUNT_ID } }, { mergeWithLastSubmission: false });
  }

  if (req.method === 'POST' && m[3] === 'confirm') {
    const form = await readForm(req);
    if (form.decision !== 'allow') {
      return provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'the user said no' });
    }
    const { session } = details;
    let grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const d = prompt.details;
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(d.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    const consent = details.grantId ? {} : { grantId };
    return provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
  }

  return json(res, 405, { error: 'method_not_allowed' });
}

const shutdown = () => {
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

process.stdout.write(
  `${JSON.stringify({
    issuer: ISSUER,
    jwks_uri: `${ISSUER}/jwks`,
    authorization_endpoint: `${ISSUER}/auth`,
    token_endpoint: `${ISSUER}/token`,
    registration_endpoint: `${ISSUER}/reg`,
    kids: publicKeys(),
    signing_kid: signingKid,
  })}\n`,
);
