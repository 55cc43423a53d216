// A real `ezforge serve` (the binary named by EZFORGE_BIN) on 127.0.0.1:0 with a fresh data
// directory, and the developer's side of it: sign-up, projects, servers and deployments over
// `/v1`, and the `ezforge` CLI.

import { randomBytes } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { baseEnv, run, start, tempDir } from './proc.mjs';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The binary under test: `EZFORGE_BIN`, else `<repo>/target/debug/ezforge`. */
export function ezforgeBin() {
  const bin = process.env.EZFORGE_BIN || join(repo, 'target', 'debug', 'ezforge');
  if (!existsSync(bin)) throw new Error(`no ezforge binary at ${bin}: build it, or set EZFORGE_BIN`);
  return bin;
}

/**
 * Starts `ezforge serve --listen 127.0.0.1:0 --data-dir <fresh>` plus `args`; resolves with
 * `{ url, version, stop }` once the first stdout line (`ezForge VERSION listening on URL`) is out.
 */
export async function startEzforge({ args = [], env = {} } = {}) {
  const dataDir = tempDir('data');
  const proc = await start(
    'ezforge',
    ezforgeBin(),
    ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir, ...args],
    {
      env: baseEnv({ EZFORGE_LOG: 'info', ...env }),
      ready: (line) => {
        const m = /^ezForge (\S+) listening on (\S+)$/.exec(line);
        return m && { version: m[1], url: m[2].replace(/\/$/, '') };
      },
    },
  );
  return {
    ...proc.match,
    logFile: proc.logFile,
    stop: async () => {
      await proc.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** A password nobody prints. */
export function newPassword() {
  return randomBytes(18).toString('base64url');
}

/** The developer (the instance's first user, so its admin) signed in over `/v1`. */
export class Developer {
  constructor(url, email, password) {
    this.url = url;
    this.email = email;
    this.password = password;
    this.cookie = undefined;
    this.csrf = undefined;
  }

  static async signUp(url, email = 'owner@example.com') {
    const dev = new Developer(url, email, newPassword());
    const resp = await fetch(`${url}/v1/auth/signup`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email, password: dev.password }),
    });
    if (resp.status !== 201 && resp.status !== 200) {
      throw new Error(`sign-up answered ${resp.status}: ${await resp.text()}`);
    }
    const cookie = resp.headers.getSetCookie().find((c) => c.startsWith('ezf_session='));
    if (!cookie) throw new Error('sign-up set no ezf_session cookie');
    dev.cookie = cookie.split(';')[0];
    const info = await resp.json();
    dev.csrf = info.csrf_token;
    dev.user = info.user;
    return dev;
  }

  /** A `/v1` call with the session cookie (and the CSRF token on state changes). */
  async api(method, path, body) {
    const headers = { cookie: this.cookie };
    if (method !== 'GET') headers['x-csrf-token'] = this.csrf;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const resp = await fetch(`${this.url}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await resp.text();
    let json;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    return { status: resp.status, json, text };
  }

  async ok(method, path, body) {
    const r = await this.api(method, path, body);
    if (r.status < 200 || r.status > 299) throw new Error(`${method} ${path} answered ${r.status}: ${r.text}`);
    return r.json;
  }

  createProject(name) {
    return this.ok('POST', '/v1/projects', { name });
  }

  createServer(project, slug, name = slug) {
    return this.ok('POST', `/v1/projects/${project}/servers`, { name, slug });
  }

  deploy(server, upstreamUrl) {
    return this.ok('POST', `/v1/servers/${server}/deployments`, { upstream_url: upstreamUrl });
  }

  async grants(project, server) {
    return (await this.ok('GET', `/v1/projects/${project}/servers/${server}/grants`)).grants;
  }

  revokeGrant(project, server, grantId) {
    return this.api('DELETE', `/v1/projects/${project}/servers/${server}/grants/${grantId}`);
  }

  /** Project + server + deployment of `upstreamUrl`; returns the server's MCP URL. */
  async mcpServer(project, slug, upstreamUrl) {
    await this.createProject(project);
    await this.createServer(project, slug, `${slug} server`);
    await this.deploy(slug, upstreamUrl);
    return `${this.url}/mcp/${slug}`;
  }

  /**
   * Runs the `ezforge` CLI against this instance, signed in as this developer (its own config
   * directory, `auth login` with the password on stdin). Resolves with `{ code, stdout, stderr }`.
   */
  async cli(args) {
    if (!this.configDir) {
      this.configDir = tempDir('cli');
      const login = await run(ezforgeBin(), ['auth', 'login', '--email', this.email], {
        env: this.cliEnv(),
        input: `${this.password}\n`,
      });
      if (login.code !== 0) throw new Error(`ezforge auth login exited ${login.code}: ${login.stderr}`);
    }
    return run(ezforgeBin(), args, { env: this.cliEnv() });
  }

  cliEnv() {
    return baseEnv({ EZFORGE_API_URL: this.url, EZFORGE_CONFIG_DIR: this.configDir });
  }
}
