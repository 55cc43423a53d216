// Child processes for the tests: started with a minimal environment, their output kept in a log
// file (never on the test's own output), killed when the test is done or the process exits.

import { spawn } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const live = new Set();
const temps = new Set();
process.on('exit', () => {
  for (const child of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

let logDir;
/** Where the children's output goes: `E2E_LOG_DIR`, or a fresh temporary directory. */
export function logDirectory() {
  if (!logDir) {
    logDir = process.env.E2E_LOG_DIR || mkdtempSync(join(tmpdir(), 'ezforge-e2e-logs-'));
    mkdirSync(logDir, { recursive: true });
  }
  return logDir;
}

/** A temporary directory that the test owns, removed when the test process exits. */
export function tempDir(prefix) {
  const dir = mkdtempSync(join(tmpdir(), `ezforge-e2e-${prefix}-`));
  temps.add(dir);
  return dir;
}

/** The environment a child gets: enough to run, nothing of the caller's secrets. */
export function baseEnv(extra = {}) {
  const env = {};
  for (const k of ['PATH', 'HOME', 'LANG', 'TMPDIR', 'SYSTEMROOT']) {
    if (process.env[k] !== undefined) env[k] = process.env[k];
  }
  return { ...env, ...extra };
}

/**
 * Starts `cmd args`, writes stdout and stderr to `<log dir>/<name>.log`, and resolves once
 * `ready(line)` returns something for a line of its output (stdout or stderr, per `readyOn`),
 * with `{ child, match, logFile, stop }`.
 */
export async function start(name, cmd, args, { env, cwd, ready, readyOn = 'stdout', timeoutMs = 30_000 } = {}) {
  const logFile = join(logDirectory(), `${name}-${process.pid}-${Date.now()}.log`);
  const log = createWriteStream(logFile);
  const child = spawn(cmd, args, { env: env ?? baseEnv(), cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  child.on('exit', () => live.delete(child));

  let resolveReady;
  let rejectReady;
  const readyPromise = new Promise((res, rej) => {
    resolveReady = res;
    rejectReady = rej;
  });
  const watch = (stream, which) => {
    let buf = '';
    stream.on('data', (chunk) => {
      log.write(chunk);
      if (which !== readyOn) return;
      buf += chunk.toString('utf8');
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).replace(/\r$/, '');
        buf = buf.slice(nl + 1);
        const match = ready(line);
        if (match) resolveReady(match);
      }
    });
  };
  watch(child.stdout, 'stdout');
  watch(child.stderr, 'stderr');
  child.on('error', (e) => rejectReady(new Error(`${name}: cannot start ${cmd}: ${e.message}`)));
  child.on('exit', (code, signal) =>
    rejectReady(new Error(`${name} exited (${code ?? signal}) before it was ready; log: ${logFile}\n${tail(logFile)}`)),
  );
  const timer = setTimeout(
    () => rejectReady(new Error(`${name} not ready after ${timeoutMs} ms; log: ${logFile}\n${tail(logFile)}`)),
    timeoutMs,
  );
  let match;
  try {
    match = await readyPromise;
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  } finally {
    clearTimeout(timer);
  }
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((res) => child.once('exit', res));
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(t);
    log.end();
  };
  return { child, match, logFile, stop };
}

/** The last lines of a log file, for an error message. */
export function tail(file, lines = 30) {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/** Runs `cmd args` to completion; resolves with `{ code, stdout, stderr }`. */
export function run(cmd, args, { env, input, cwd, timeoutMs = 60_000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: env ?? baseEnv(), cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    live.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      live.delete(child);
      resolve({ code: code ?? signal, stdout, stderr });
    });
    // A child that exits without reading its input must not turn into an EPIPE error here.
    child.stdin.on('error', () => {});
    child.stdin.end(input ?? '');
  });
}
