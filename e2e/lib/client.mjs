// The official MCP TypeScript SDK as an MCP client app uses it: `Client` +
// `StreamableHTTPClientTransport` with an `OAuthClientProvider`. The SDK is used unmodified, through
// its public API. What the app supplies is what any app supplies: where to keep client
// information, tokens and the PKCE verifier, and how to send the user to the authorization page
// (here: the `Browser`, a person signing in and consenting over HTTP). The transport is given a
// recording `fetch` so the tests can check what the SDK sent and what it received.

import { randomBytes } from 'node:crypto';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';

export { UnauthorizedError };

/** An in-memory OAuthClientProvider whose "user" is a `Browser`. */
export class TestOAuthProvider {
  /**
   * @param {object} o
   * @param {string} o.redirectUrl loopback redirect URI (nothing needs to listen there: the
   *   browser stops at the redirect and hands its URL back)
   * @param {object} o.clientMetadata what dynamic registration sends
   * @param {string} [o.clientMetadataUrl] a Client ID Metadata Document URL (https)
   * @param {import('./browser.mjs').Browser} o.browser
   */
  constructor({ redirectUrl, clientMetadata, clientMetadataUrl, browser }) {
    this._redirectUrl = redirectUrl;
    this._clientMetadata = clientMetadata;
    if (clientMetadataUrl) this.clientMetadataUrl = clientMetadataUrl;
    this.browser = browser;
    /** When false, the user does not come back: the authorization URL is only recorded. */
    this.userConsents = true;
    this.authorizationUrls = [];
    this.callbacks = [];
    this.savedTokens = [];
    this.invalidated = [];
    this._client = undefined;
    this._tokens = undefined;
    this._verifier = undefined;
    this._states = [];
  }

  get redirectUrl() {
    return this._redirectUrl;
  }

  get clientMetadata() {
    return this._clientMetadata;
  }

  state() {
    const s = randomBytes(16).toString('base64url');
    this._states.push(s);
    return s;
  }

  clientInformation() {
    return this._client;
  }

  saveClientInformation(info) {
    this._client = info;
  }

  tokens() {
    return this._tokens;
  }

  saveTokens(tokens) {
    this._tokens = tokens;
    this.savedTokens.push(tokens);
  }

  saveCodeVerifier(v) {
    this._verifier = v;
  }

  codeVerifier() {
    if (!this._verifier) throw new Error('no code verifier saved');
    return this._verifier;
  }

  invalidateCredentials(scope) {
    this.invalidated.push(scope);
    if (scope === 'all' || scope === 'client') this._client = undefined;
    if (scope === 'all' || scope === 'tokens') this._tokens = undefined;
    if (scope === 'all' || scope === 'verifier') this._verifier = undefined;
  }

  async redirectToAuthorization(authorizationUrl) {
    this.authorizationUrls.push(new URL(authorizationUrl.href));
    if (!this.userConsents) return;
    const back = new URL(await this.browser.authorize(authorizationUrl.href, this._redirectUrl));
    this.callbacks.push(back);
  }

  /** The code from the last redirect back, after checking its `state`. */
  takeCode() {
    const back = this.callbacks.at(-1);
    if (!back) throw new Error('the user was never sent back to the client');
    if (back.searchParams.get('error')) {
      throw new Error(`authorization failed: ${back.searchParams.get('error')}: ${back.searchParams.get('error_description')}`);
    }
    if (back.searchParams.get('state') !== this._states.at(-1)) throw new Error('state mismatch on the redirect');
    return back.searchParams.get('code');
  }
}

/**
 * A `fetch` that records every request the SDK makes and the answer it got: method, URL,
 * status, the request's form or JSON body, the answer's JSON body and `WWW-Authenticate`.
 * Nothing recorded is printed by the suite except method, path and status.
 */
export function recordingFetch() {
  const log = [];
  const recorded = async (input, init = {}) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const method = (init.method || (input instanceof Request ? input.method : 'GET')).toUpperCase();
    const entry = { method, url, path: url.pathname, status: 0 };
    const headers = new Headers(init.headers);
    entry.authorization = headers.get('authorization') ?? undefined;
    if (typeof init.body === 'string') entry.body = init.body;
    else if (init.body instanceof URLSearchParams) entry.body = init.body.toString();
    if (entry.body && (headers.get('content-type') || '').includes('x-www-form-urlencoded')) {
      entry.form = Object.fromEntries(new URLSearchParams(entry.body));
    } else if (entry.body) {
      try {
        entry.json = JSON.parse(entry.body);
      } catch {
        // not JSON
      }
    }
    log.push(entry);
    const resp = await fetch(input, init);
    entry.status = resp.status;
    entry.wwwAuthenticate = resp.headers.get('www-authenticate') ?? undefined;
    entry.contentType = resp.headers.get('content-type') ?? undefined;
    if ((entry.contentType || '').includes('application/json')) {
      try {
        entry.response = await resp.clone().json();
      } catch {
        // a body that is not JSON after all
      }
    }
    return resp;
  };
  return { fetch: recorded, log };
}

/** `METHOD path -> status` lines, for messages (never bodies: they may carry secrets). */
export function hops(log) {
  return log.map((e) => `${e.method} ${e.path}${e.form?.grant_type ? ` (${e.form.grant_type})` : ''} -> ${e.status}`);
}

/**
 * Connects an SDK `Client` to `url` with `provider`, the way the SDK's own OAuth example does:
 * connect; on `UnauthorizedError` the provider has sent the user through authorization, so
 * `finishAuth(code)` and connect again with a new transport.
 */
export async function connectWithOAuth(url, provider, recorder, { name = 'ezforge-e2e' } = {}) {
  const client = new Client({ name, version: '1.0.0' });
  client.onerror = () => {};
  const transportOpts = { authProvider: provider, fetch: recorder.fetch };
  let transport = new StreamableHTTPClientTransport(new URL(url), transportOpts);
  let firstError;
  try {
    await client.connect(transport);
  } catch (e) {
    if (!(e instanceof UnauthorizedError)) throw e;
    firstError = e;
    await transport.finishAuth(provider.takeCode());
    transport = new StreamableHTTPClientTransport(new URL(url), transportOpts);
    await client.connect(transport);
  }
  return { client, transport, firstError };
}

/** The payload of a JWT, unverified. */
export function claims(jwt) {
  const parts = jwt.split('.');
  if (parts.length !== 3) throw new Error('not a JWT');
  return JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
}

/** The header of a JWT. */
export function jwtHeader(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[0], 'base64url').toString('utf8'));
}

/** The text of a tool call's content. */
export function textOf(result) {
  return (result.content ?? [])
    .filter((c) => c.type === 'text')
    .map((c) => c.text)
    .join('\n');
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
