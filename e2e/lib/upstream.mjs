// `@modelcontextprotocol/server-everything` in Streamable HTTP mode, on 127.0.0.1 only, on a
// free port: the real upstream MCP server behind the gateway.

import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { baseEnv, start } from './proc.mjs';
import { reverseProxy } from './proxy.mjs';

const require = createRequire(import.meta.url);
const here = dirname(fileURLToPath(import.meta.url));

/** The server-everything entry point (`dist/index.js`), resolved from this package's deps. */
export function everythingEntry() {
  const pkg = require.resolve('@modelcontextprotocol/server-everything/package.json');
  return join(dirname(pkg), 'dist', 'index.js');
}

/**
 * Starts server-everything (`streamableHttp`, PORT=0 with the loopback preload) and returns
 * `{ url, port, stop }` where `url` is its MCP endpoint `http://127.0.0.1:PORT/mcp`.
 */
export async function startEverything() {
  const preload = pathToFileURL(join(here, 'loopback-only.mjs')).href;
  const proc = await start('server-everything', process.execPath, ['--import', preload, everythingEntry(), 'streamableHttp'], {
    env: baseEnv({ PORT: '0', NODE_ENV: 'production' }),
    readyOn: 'stderr',
    ready: (line) => {
      const m = /^e2e-listening (\S+) (\d+)$/.exec(line);
      return m && { host: m[1], port: Number(m[2]) };
    },
  });
  const { host, port } = proc.match;
  if (host !== '127.0.0.1') throw new Error(`server-everything bound ${host}, not 127.0.0.1`);
  return { url: `http://127.0.0.1:${port}/mcp`, port, stop: proc.stop, logFile: proc.logFile };
}

/**
 * A recording pass-through in front of an upstream started by `startEverything`: deploy
 * `tap.url` instead of `upstream.url` to see every request that reaches the upstream
 * (`tap.exchanges`: method, path, headers, status).
 */
export async function tapUpstream(upstream) {
  const proxy = await reverseProxy(new URL(upstream.url).origin);
  return { ...proxy, url: `${proxy.origin}/mcp` };
}
