// The dashboard and the OAuth pages in a real browser (Debian's Chromium, headless, driven by
// playwright-core), as a person uses them: sign-up, projects, API keys (secret shown once, used
// against /v1, revoked through the confirmation page), servers and their MCP URL, the security
// headers and CSRF refusal of the dashboard's forms; and an end user's OAuth sign-in and consent
// for a dynamically registered public client, back to a loopback redirect URI that listens.
//
// Pages are found by what a person reads (headings, labels, link and button names). Every test
// keeps full-page screenshots in <repo>/target/dashboard-screenshots/<test>.png (plus
// <test>-<step>.png, and <test>-failure.png when it fails). Without Chromium the tests are skipped
// with a message, or fail when CI=true.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { describe, it } from 'node:test';
import { findChromium, inCI, missingChromiumMessage, screenshot, withBrowser } from '../lib/chromium.mjs';
import { claims } from '../lib/client.mjs';
import { Developer, ezforgeBin, newPassword, startEzforge } from '../lib/ezforge.mjs';

const SCOPES = ['servers:read', 'servers:write', 'deployments:read', 'deployments:write', 'logs:read', 'metrics:read', 'billing:read'];
const PROJECT_TABS = ['Servers', 'API Keys', 'Members', 'Usage', 'Audit log'];
const SERVER_SECTIONS = ['Authentication', 'Access policy', 'Tool policy', 'Deployments', 'Connected clients', 'Recent requests', 'Metrics'];

const chromiumBin = findChromium();
const skip = !chromiumBin && !inCI() ? `${missingChromiumMessage()} (with CI=true this is a failure)` : false;

function requireChromium() {
  if (!chromiumBin) throw new Error(`${missingChromiumMessage()}; CI=true, so the browser tests fail instead of skipping`);
}

/** A `waitForURL` predicate: exactly `origin` + `path`, whatever the query. */
const at = (origin, path) => (url) => url.origin === origin && url.pathname === path;

function assertAt(page, origin, path, what) {
  const url = new URL(page.url());
  assert.equal(url.origin + url.pathname, origin + path, `${what} (now at ${url.pathname})`);
}

async function heading(page, name) {
  await page.getByRole('heading', { name, exact: true }).first().waitFor({ state: 'visible' });
}

const link = (scope, name) => scope.getByRole('link', { name, exact: true });
const button = (scope, name) => scope.getByRole('button', { name, exact: true });

async function hrefPath(locator) {
  return new URL(await locator.evaluate((a) => a.href)).pathname;
}

/** Fails with a clear message when the binary under test has no dashboard (yet). */
async function requireDashboard(origin) {
  const r = await fetch(`${origin}/dashboard/signup`, { redirect: 'manual' });
  await r.body?.cancel();
  if (r.status === 404) {
    throw new Error(`this ezforge binary has no dashboard: GET /dashboard/signup answered 404 (EZFORGE_BIN=${ezforgeBin()})`);
  }
}

function assertSecurityHeaders(headers, what) {
  const csp = headers['content-security-policy'] ?? '';
  assert.match(csp, /(^|;)\s*frame-ancestors 'none'\s*(;|$)/, `${what}: Content-Security-Policy has frame-ancestors 'none' (got ${JSON.stringify(csp)})`);
  assert.equal((headers['x-frame-options'] ?? '').toUpperCase(), 'DENY', `${what}: X-Frame-Options: DENY`);
  assert.equal((headers['x-content-type-options'] ?? '').toLowerCase(), 'nosniff', `${what}: X-Content-Type-Options: nosniff`);
}

/** The signed-in browser's `ezf_session` cookie as a `Cookie` header, for Node fetch. */
async function sessionCookieHeader(context, origin) {
  const c = (await context.cookies(origin)).find((k) => k.name === 'ezf_session');
  assert.ok(c, 'the browser holds an ezf_session cookie');
  return `ezf_session=${c.value}`;
}

/**
 * Signed out, `path` redirects to /dashboard/login, and the browser ends on a sign-in page
 * (/dashboard/login may itself hand over to the OAuth sign-in page).
 */
async function assertSignedOutRedirect(page, origin, path) {
  const r = await fetch(`${origin}${path}`, { redirect: 'manual' });
  await r.body?.cancel();
  assert.ok(r.status >= 300 && r.status < 400, `signed out, GET ${path} redirects (${r.status})`);
  assert.equal(new URL(r.headers.get('location'), origin).pathname, '/dashboard/login', `signed out, GET ${path} redirects to /dashboard/login`);
  await page.goto(`${origin}${path}`);
  await heading(page, 'Sign in to ezForge');
  await page.getByLabel('Password', { exact: true }).waitFor();
}

/** The header navigation of a signed-in page. */
async function assertSignedInNav(page) {
  const nav = page.getByRole('navigation').first();
  await link(nav, 'Projects').waitFor();
  await button(nav, 'Sign out').waitFor();
  await button(nav, 'Sign out everywhere').waitFor();
}

async function signUpThroughPage(page, origin, email, password) {
  await page.goto(`${origin}/dashboard/signup`);
  await heading(page, 'Create your ezForge account');
  await page.getByLabel('Email', { exact: true }).fill(email);
  await page.getByLabel('Password', { exact: true }).fill(password);
  await submit(page, origin, 'Create account', { path: '/dashboard' });
  await heading(page, 'Projects');
}

async function createProjectThroughPage(page, origin, name) {
  assertAt(page, origin, '/dashboard', 'the project form is on /dashboard');
  await page.getByLabel('Project name', { exact: true }).fill(name);
  await submit(page, origin, 'Create project', { path: `/dashboard/projects/${name}` });
  await heading(page, name);
}

/** Whether some "Copy" button on the page puts `text` on the clipboard. */
async function someCopyButtonCopies(page, text) {
  // Handles, not locators: a button may relabel itself ("Copied") once clicked.
  for (const handle of await page.getByRole('button', { name: /^Copy\b/ }).elementHandles()) {
    await page.evaluate(() => navigator.clipboard.writeText(''));
    await handle.click();
    const copied = await page.waitForFunction((want) => navigator.clipboard.readText().then((t) => t === want), text, { timeout: 2000 }).then(
      () => true,
      () => false,
    );
    if (copied) return true;
  }
  return false;
}

/**
 * Clicks the submit button `name` (in `scope`) and checks what the server answered the form's POST:
 * a redirect (or whatever `accept` allows), then waits for `path` when given. A refusal fails with
 * the status, the page's alert text and the Origin header the browser sent.
 */
async function submit(page, origin, name, { path, scope = page, accept = (s) => s >= 300 && s < 400 } = {}) {
  const posted = page.waitForResponse((r) => r.request().method() === 'POST' && r.url().startsWith(`${origin}/`));
  await button(scope, name).click();
  const resp = await posted;
  if (!accept(resp.status())) {
    await page.waitForLoadState().catch(() => {});
    const alerts = await page.getByRole('alert').allInnerTexts().catch(() => []);
    const sent = await resp.request().headerValue('origin');
    assert.fail(
      `"${name}": POST ${new URL(resp.url()).pathname} answered ${resp.status()} ${JSON.stringify(alerts)} ` +
        `(the browser sent Origin: ${sent ?? '(none)'}, Sec-Fetch-Site: ${await resp.request().headerValue('sec-fetch-site')})`,
    );
  }
  if (path) await page.waitForURL(typeof path === 'string' ? at(origin, path) : path);
  return resp;
}

/** `fn(ezforge)` with a fresh ezForge, stopped afterwards. */
async function withEzforge(fn) {
  const ez = await startEzforge();
  try {
    return await fn(ez);
  } finally {
    await ez.stop();
  }
}

describe('dashboard in a browser', () => {
  it('signs up through the page (HttpOnly one-hour session), creates a project and lands on its page', { skip }, async () => {
    requireChromium();
    const SHOT = 'dashboard-signup-project';
    const PROJECT = 'acme-tools';
    const email = 'founder@example.com';
    const password = newPassword();
    await withEzforge(async (ez) => {
      await requireDashboard(ez.url);
      await withBrowser(SHOT, async ({ context, page }) => {
        // Signed out, the dashboard sends the person to its sign-in page.
        await assertSignedOutRedirect(page, ez.url, '/dashboard');
        await assertSignedOutRedirect(page, ez.url, `/dashboard/projects/${PROJECT}/keys`);

        const before = Date.now() / 1000;
        await page.goto(`${ez.url}/dashboard/signup`);
        await screenshot(page, `${SHOT}-signup`);
        await signUpThroughPage(page, ez.url, email, password);
        await assertSignedInNav(page);

        const cookies = await context.cookies(ez.url);
        const session = cookies.find((c) => c.name === 'ezf_session');
        assert.ok(session, `sign-up set an ezf_session cookie (cookies: ${cookies.map((c) => c.name)})`);
        assert.equal(session.httpOnly, true, 'the session cookie is HttpOnly');
        const lifetime = session.expires - before;
        assert.ok(lifetime > 3600 - 120 && lifetime < 3600 + 120, `the session cookie lasts about an hour (${Math.round(lifetime)} s)`);
        assert.ok(['Lax', 'Strict'].includes(session.sameSite), `SameSite Lax or Strict (got ${session.sameSite})`);
        assert.ok(!(await page.evaluate(() => document.cookie)).includes('ezf_session'), 'scripts on the page cannot read it');

        await createProjectThroughPage(page, ez.url, PROJECT);
        for (const tab of PROJECT_TABS) await link(page, tab).first().waitFor();
        assert.equal(await hrefPath(link(page, 'Servers').first()), `/dashboard/projects/${PROJECT}`, '"Servers" is the project page');
        await screenshot(page, SHOT);

        // Each tab leads to its page.
        for (const [tab, path] of [['API Keys', 'keys'], ['Members', 'members'], ['Usage', 'usage'], ['Audit log', 'audit']]) {
          await link(page, tab).first().click();
          await page.waitForURL(at(ez.url, `/dashboard/projects/${PROJECT}/${path}`));
          await heading(page, tab);
          await assertSignedInNav(page);
          if (tab === 'Members') {
            assert.ok((await page.locator('body').innerText()).includes(email), 'the members page lists the owner');
          }
        }

        // "Projects" in the header lists the project, linking to its page.
        await link(page.getByRole('navigation').first(), 'Projects').click();
        await page.waitForURL(at(ez.url, '/dashboard'));
        assert.equal(await hrefPath(link(page, PROJECT)), `/dashboard/projects/${PROJECT}`);

        // Sign out ends the session (not only the cookie): the old cookie is refused by /v1.
        const old = await sessionCookieHeader(context, ez.url);
        await submit(page, ez.url, 'Sign out', { accept: (s) => s >= 200 && s < 400, scope: page.getByRole('navigation').first() });
        await page.waitForLoadState();
        const v1 = await fetch(`${ez.url}/v1/auth/session`, { headers: { cookie: old } });
        await v1.body?.cancel();
        assert.equal(v1.status, 401, 'after "Sign out" the old session cookie no longer works');
        await assertSignedOutRedirect(page, ez.url, '/dashboard');

        // And back in through the sign-in page.
        await page.goto(`${ez.url}/dashboard/login`);
        await heading(page, 'Sign in to ezForge');
        await page.getByLabel('Email', { exact: true }).fill(email);
        await page.getByLabel('Password', { exact: true }).fill(password);
        await submit(page, ez.url, 'Sign in', { path: '/dashboard' });
        await link(page, PROJECT).waitFor();
        await screenshot(page, `${SHOT}-signed-in-again`);
      });
    });
  });

  it('creates a live API key with servers:read + logs:read, uses its secret on /v1, revokes it through the confirmation page', { skip }, async () => {
    requireChromium();
    const SHOT = 'dashboard-api-key';
    const PROJECT = 'key-project';
    const KEY_NAME = 'ci deploy key';
    const WANTED = ['servers:read', 'logs:read'];
    const email = 'keys-owner@example.com';
    await withEzforge(async (ez) => {
      await requireDashboard(ez.url);
      await withBrowser(SHOT, async ({ context, page }) => {
        await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: ez.url });
        await signUpThroughPage(page, ez.url, email, newPassword());
        await createProjectThroughPage(page, ez.url, PROJECT);
        const keysPath = `/dashboard/projects/${PROJECT}/keys`;

        await link(page, 'API Keys').first().click();
        await page.waitForURL(at(ez.url, keysPath));
        await heading(page, 'API Keys');
        await page.getByLabel('Key name', { exact: true }).fill(KEY_NAME);
        await page.getByRole('radio', { name: 'Test', exact: true }).waitFor();
        await page.getByRole('radio', { name: 'Live', exact: true }).check();
        for (const scope of SCOPES) {
          await page.getByRole('checkbox', { name: scope, exact: true }).setChecked(WANTED.includes(scope));
        }
        await page.getByLabel('Expires in days', { exact: true }).waitFor();
        await submit(page, ez.url, 'Create key', { accept: (s) => s >= 200 && s < 400 });

        // The secret, once.
        const secretEl = page.locator('#new-key-secret');
        await secretEl.waitFor();
        const secret = ((await secretEl.textContent()) ?? '').trim();
        assert.ok(/^ezf_live_[0-9A-Za-z]{38}$/.test(secret), `#new-key-secret holds a 47-character live key (starts ${JSON.stringify(secret.slice(0, 9))}, ${secret.length} characters)`);
        await page.getByText('will not be shown again').first().waitFor();
        const copy = page.locator('#copy-secret');
        assert.equal(
          await page.getByRole('button', { name: /^Copy\b/ }).and(copy).count(),
          1,
          '#copy-secret is a button named "Copy"',
        );
        await page.evaluate(() => navigator.clipboard.writeText(''));
        await copy.click();
        const copied = await page.waitForFunction((s) => navigator.clipboard.readText().then((t) => t === s), secret, { timeout: 3000 }).then(
          () => true,
          () => false,
        );
        assert.ok(copied, '"Copy" puts the secret on the clipboard');
        await screenshot(page, `${SHOT}-created`);

        // The key's row, checked against /v1's listing.
        const row = page.locator('tr[id^="key-"]').filter({ hasText: KEY_NAME });
        assert.equal(await row.count(), 1, 'one row for the new key');
        const keyId = (await row.getAttribute('id')).slice('key-'.length);
        const cookie = await sessionCookieHeader(context, ez.url);
        const listed = await (await fetch(`${ez.url}/v1/projects/${PROJECT}/keys`, { headers: { cookie } })).json();
        const key = listed.keys.find((k) => k.name === KEY_NAME);
        assert.ok(key, '/v1 lists the key');
        assert.equal(keyId, key.id, 'the row is tr#key-{key_id}');
        assert.equal(key.environment, 'live');
        assert.deepEqual([...key.scopes].sort(), [...WANTED].sort(), 'exactly the ticked scopes');
        const text = await row.innerText();
        assert.ok(!text.includes(secret), 'the row does not show the secret');
        for (const want of [KEY_NAME, secret.slice(0, 13), 'live', ...WANTED, email, 'active']) {
          assert.ok(text.includes(want), `the key's row shows ${JSON.stringify(want)}: ${JSON.stringify(text)}`);
        }
        for (const scope of SCOPES.filter((s) => !WANTED.includes(s))) {
          assert.ok(!text.includes(scope), `the row does not list ${scope}: ${JSON.stringify(text)}`);
        }

        // The secret read off the page works as an API key.
        const ok = await fetch(`${ez.url}/v1/projects`, { headers: { authorization: `Bearer ${secret}` } });
        assert.equal(ok.status, 200, 'GET /v1/projects with the new key');
        const { projects } = await ok.json();
        assert.deepEqual(projects.map((p) => p.name), [PROJECT], 'the key sees its project');

        // Shown once: the keys page, opened again, does not show it.
        await page.goto(`${ez.url}${keysPath}`);
        await heading(page, 'API Keys');
        assert.equal(await page.locator('#new-key-secret').count(), 0, 'no secret on the keys page opened again');
        assert.ok(!(await page.content()).includes(secret), 'the secret is nowhere in the page opened again');

        // Revoke, through the confirmation page.
        // "Revoke", possibly with the key's name for screen readers ("Revoke ci deploy key").
        await page.locator(`[id="key-${keyId}"]`).getByRole('link', { name: /^Revoke\b/ }).click();
        await heading(page, 'Revoke API key?');
        const confirm = await page.locator('body').innerText();
        assert.ok([KEY_NAME, secret.slice(0, 13), keyId].some((k) => confirm.includes(k)), 'the confirmation page names the key (name, prefix or id)');
        await screenshot(page, `${SHOT}-confirm`);
        await submit(page, ez.url, 'Revoke key', { path: keysPath });
        const revokedText = await page.locator(`[id="key-${keyId}"]`).innerText();
        assert.match(revokedText, /\brevoked\b/, `the row's status is "revoked": ${JSON.stringify(revokedText)}`);
        assert.doesNotMatch(revokedText, /\bactive\b/, 'and no longer "active"');
        await screenshot(page, SHOT);

        const refused = await fetch(`${ez.url}/v1/projects`, { headers: { authorization: `Bearer ${secret}` } });
        assert.equal(refused.status, 401, 'the revoked key is refused');
        assert.equal((await refused.json()).error?.code, 'api_key_revoked');
      });
    });
  });

  it('creates a server and shows its MCP URL; dashboard security headers; forms refuse a POST without the right csrf', { skip }, async () => {
    requireChromium();
    const SHOT = 'dashboard-server';
    const PROJECT = 'tools';
    const SLUG = 'weather';
    const NAME = 'Weather Tools';
    await withEzforge(async (ez) => {
      await requireDashboard(ez.url);
      const mcpUrl = `${ez.url}/mcp/${SLUG}`;
      await withBrowser(SHOT, async ({ context, page }) => {
        await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: ez.url });
        const login = await page.goto(`${ez.url}/dashboard/login`);
        assertSecurityHeaders(await login.allHeaders(), 'GET /dashboard/login');
        const signup = await page.goto(`${ez.url}/dashboard/signup`);
        assertSecurityHeaders(await signup.allHeaders(), 'GET /dashboard/signup');
        await signUpThroughPage(page, ez.url, 'servers-owner@example.com', newPassword());
        await createProjectThroughPage(page, ez.url, PROJECT);
        const projectPage = await page.reload();
        assertSecurityHeaders(await projectPage.allHeaders(), 'GET /dashboard/projects/{name}');

        await page.getByLabel('Server name', { exact: true }).fill(NAME);
        await page.getByLabel('Slug', { exact: true }).fill(SLUG);
        await page.getByLabel('Environment', { exact: true }).selectOption('test');
        await submit(page, ez.url, 'Create server', { path: `/dashboard/servers/${SLUG}` });
        const serverPage = await page.reload();
        assertSecurityHeaders(await serverPage.allHeaders(), 'GET /dashboard/servers/{slug}');
        await heading(page, NAME);
        await assertSignedInNav(page);
        assert.equal(((await page.locator('code#mcp-url').textContent()) ?? '').trim(), mcpUrl, 'the MCP URL');
        assert.ok(await someCopyButtonCopies(page, mcpUrl), 'a "Copy" button copies the MCP URL');
        for (const section of SERVER_SECTIONS) await heading(page, section);
        await page.getByLabel('Upstream URL', { exact: true }).waitFor();
        await button(page, 'Deploy').waitFor();
        await screenshot(page, SHOT);

        const cookie = await sessionCookieHeader(context, ez.url);
        const server = await (await fetch(`${ez.url}/v1/servers/${SLUG}`, { headers: { cookie } })).json();
        assert.equal(server.name, NAME);
        assert.equal(server.environment, 'test', 'the Environment chosen in the form');

        // The project's Servers table links the slug to the server's page.
        await page.goto(`${ez.url}/dashboard/projects/${PROJECT}`);
        const slugLink = link(page.getByRole('table'), SLUG);
        assert.equal(await hrefPath(slugLink), `/dashboard/servers/${SLUG}`);

        // CSRF: the "Create project" form, posted from outside the page with the session cookie.
        await page.goto(`${ez.url}/dashboard`);
        const dashboard = await page.reload();
        assertSecurityHeaders(await dashboard.allHeaders(), 'GET /dashboard');
        const nameField = await page.getByLabel('Project name', { exact: true }).getAttribute('name');
        const form = await button(page, 'Create project')
          .locator('xpath=ancestor::form')
          .evaluate((f) => ({ action: f.action, method: f.method, fields: [...new FormData(f)].map(([k, v]) => [k, String(v)]) }));
        assert.equal(form.method.toLowerCase(), 'post');
        const csrf = form.fields.find(([k]) => k === 'csrf');
        assert.ok(csrf && csrf[1], 'the form carries a hidden csrf input');
        const fields = (project, token) => {
          const f = form.fields.filter(([k]) => k !== nameField && k !== 'csrf');
          f.push([nameField, project]);
          if (token !== undefined) f.push(['csrf', token]);
          return new URLSearchParams(f).toString();
        };
        const post = async (body, headers = {}) => {
          const r = await fetch(form.action, {
            method: 'POST',
            redirect: 'manual',
            headers: { cookie, 'content-type': 'application/x-www-form-urlencoded', ...headers },
            body,
          });
          await r.body?.cancel();
          return r;
        };
        const refusals = [
          ['evil-cross-site', fields('evil-cross-site'), { origin: 'http://attacker.example', referer: 'http://attacker.example/' }, 'cross-site, no csrf'],
          ['evil-wrong', fields('evil-wrong', `${csrf[1].slice(0, -4)}AAAA`), { origin: ez.url }, 'same origin, wrong csrf'],
          ['evil-missing', fields('evil-missing'), {}, 'no csrf, no Origin'],
          ['evil-empty', fields('evil-empty', ''), { origin: ez.url }, 'empty csrf'],
        ];
        for (const [, body, headers, what] of refusals) {
          const r = await post(body, headers);
          assert.equal(r.status, 403, `POST ${new URL(form.action).pathname} (${what}) is refused`);
        }
        // The same request with the page's token goes through: the refusals were the csrf's doing.
        const accepted = await post(fields('legit-project', csrf[1]), { origin: ez.url });
        assert.ok(accepted.status >= 300 && accepted.status < 400, `with the page's csrf the same POST is accepted (${accepted.status})`);
        assert.equal(new URL(accepted.headers.get('location'), ez.url).pathname, '/dashboard/projects/legit-project');

        // A real cross-site form in the browser (another site posting to the dashboard).
        const attacker = await attackerSite(form.action, nameField, 'evil-browser');
        try {
          await page.goto(attacker.url);
          const [resp] = await Promise.all([
            page.waitForResponse((r) => r.request().method() === 'POST' && r.url() === form.action),
            button(page, 'Win a prize').click(),
          ]);
          const location = resp.headers().location;
          const toLogin = resp.status() >= 300 && resp.status() < 400 && new URL(location, ez.url).pathname === '/dashboard/login';
          assert.ok(resp.status() === 403 || toLogin, `the cross-site POST is refused or sent to sign-in (${resp.status()})`);
          await page.waitForLoadState();
          await screenshot(page, `${SHOT}-cross-site-post`);
        } finally {
          await attacker.stop();
        }

        const names = (await (await fetch(`${ez.url}/v1/projects`, { headers: { cookie } })).json()).projects.map((p) => p.name).sort();
        assert.deepEqual(names, ['legit-project', PROJECT].sort(), 'no refused POST created a project');
      });
    });
  });
});

describe('OAuth sign-in and consent pages in a browser', () => {
  it('an end user signs in and allows a dynamically registered public client; the loopback redirect gets code, state, iss; the code is exchanged', { skip }, async () => {
    requireChromium();
    const SHOT = 'oauth-sign-in-consent';
    const CLIENT_NAME = 'Notes Desktop (e2e)';
    const SERVER_NAME = 'Team Notes';
    const SLUG = 'notes';
    await withEzforge(async (ez) => {
      const dev = await Developer.signUp(ez.url, 'person@example.com');
      await dev.createProject('oauth-pages');
      await dev.createServer('oauth-pages', SLUG, SERVER_NAME);
      const resource = `${ez.url}/mcp/${SLUG}`;
      const callback = await callbackListener();
      try {
        const reg = await fetch(`${ez.url}/register`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({
            client_name: CLIENT_NAME,
            redirect_uris: [callback.redirectUri],
            grant_types: ['authorization_code'],
            response_types: ['code'],
            token_endpoint_auth_method: 'none',
          }),
        });
        const client = await reg.json();
        assert.equal(reg.status, 201, `dynamic registration: ${JSON.stringify(client)}`);
        assert.ok(client.client_id, 'a client_id');
        assert.equal(client.token_endpoint_auth_method, 'none');
        assert.equal(client.client_secret, undefined, 'a public client gets no secret');

        const verifier = randomBytes(32).toString('base64url');
        const state = randomBytes(16).toString('base64url');
        const authorize = new URL(`${ez.url}/authorize`);
        for (const [k, v] of Object.entries({
          response_type: 'code',
          client_id: client.client_id,
          redirect_uri: callback.redirectUri,
          code_challenge: createHash('sha256').update(verifier).digest('base64url'),
          code_challenge_method: 'S256',
          state,
          resource,
          scope: 'mcp:read mcp:write',
        })) {
          authorize.searchParams.set(k, v);
        }

        await withBrowser(SHOT, async ({ page }) => {
          await page.goto(authorize.href);
          assertAt(page, ez.url, '/login', 'not signed in, /authorize shows the sign-in page');
          await heading(page, 'Sign in to ezForge');
          await screenshot(page, `${SHOT}-sign-in`);
          await page.getByLabel('Email', { exact: true }).fill(dev.email);
          await page.getByLabel('Password', { exact: true }).fill(dev.password);
          await submit(page, ez.url, 'Sign in', { path: '/authorize' });
          await heading(page, `Allow ${CLIENT_NAME} to use ${SERVER_NAME}?`);
          const consent = await page.locator('body').innerText();
          for (const [want, what] of [
            [client.client_id, 'the client_id'],
            [resource, 'the MCP server URL'],
            [dev.email, 'the signed-in person'],
            ['mcp:read', 'scope mcp:read'],
            ['mcp:write', 'scope mcp:write'],
            ['127.0.0.1', 'where the browser goes next'],
          ]) {
            assert.ok(consent.includes(want), `the consent page shows ${what}`);
          }
          assert.ok(!consent.includes('offline_access'), 'no scope that was not asked for');
          await button(page, 'Deny').waitFor();
          await screenshot(page, SHOT);

          const allowed = await submit(page, ez.url, 'Allow', { path: (u) => u.href.startsWith(callback.redirectUri) });
          assert.equal(allowed.status(), 303, '"Allow" answers 303 to the redirect URI');
          await page.getByRole('heading', { name: 'Signed in' }).waitFor();
          await screenshot(page, `${SHOT}-callback`);
        });

        const back = await callback.received();
        assert.equal(back.searchParams.get('error'), null, `no error: ${back.searchParams.get('error_description')}`);
        const code = back.searchParams.get('code');
        assert.ok(code, 'the redirect carries a code');
        assert.equal(back.searchParams.get('state'), state, 'and the state sent');
        assert.equal(back.searchParams.get('iss'), ez.url, 'and iss (RFC 9207)');

        const tokenResp = await fetch(`${ez.url}/token`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({
            grant_type: 'authorization_code',
            code,
            redirect_uri: callback.redirectUri,
            client_id: client.client_id,
            code_verifier: verifier,
            resource,
          }).toString(),
        });
        const token = await tokenResp.json();
        assert.equal(tokenResp.status, 200, `the code exchange: ${token.error ?? ''} ${token.error_description ?? ''}`);
        assert.ok(typeof token.access_token === 'string' && token.access_token.length > 0, 'an access token');
        assert.equal(String(token.token_type).toLowerCase(), 'bearer');
        const c = claims(token.access_token);
        assert.equal(c.aud, resource, 'for the server that was consented to');
        assert.equal(c.client_id, client.client_id);
        assert.equal(c.sub, dev.user.id);
        assert.deepEqual(c.scope.split(' ').sort(), ['mcp:read', 'mcp:write']);
      } finally {
        await callback.stop();
      }
    });
  });
});

/**
 * The client's loopback redirect URI, actually listening: `received` resolves with the URL the
 * browser was sent back to; the browser gets a small page.
 */
async function callbackListener() {
  let resolve;
  const received = new Promise((r) => {
    resolve = r;
  });
  const server = createServer((req, res) => {
    const url = new URL(req.url, `http://${req.headers.host}`);
    if (url.pathname !== '/callback') {
      res.writeHead(404).end();
      return;
    }
    resolve(url);
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><title>Notes Desktop</title><h1>Signed in</h1><p>You can close this window and return to Notes Desktop.</p>');
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const redirectUri = `http://127.0.0.1:${server.address().port}/callback`;
  return {
    redirectUri,
    /** The URL the browser came back with, or an error after `ms`. */
    received: (ms = 10_000) => {
      let timer;
      const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`nothing came back to ${redirectUri} in ${ms} ms`)), ms);
      });
      return Promise.race([received, timeout]).finally(() => clearTimeout(timer));
    },
    stop: () =>
      new Promise((r) => {
        server.closeAllConnections?.();
        server.close(r);
      }),
  };
}

/**
 * Another site (`localhost`, not `127.0.0.1`: a different site for SameSite cookies) with a form
 * that posts to the dashboard's "Create project" action without any csrf token.
 */
async function attackerSite(action, nameField, project) {
  const escape = (s) => s.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');
  const server = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(
      `<!doctype html><title>Totally legit</title><h1>Free prizes</h1><form method="post" action="${escape(action)}">` +
        `<input type="hidden" name="${escape(nameField)}" value="${escape(project)}"><button type="submit">Win a prize</button></form>`,
    );
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://localhost:${server.address().port}/`,
    stop: () =>
      new Promise((r) => {
        server.closeAllConnections?.();
        server.close(r);
      }),
  };
}
