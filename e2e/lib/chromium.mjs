// A real browser for the dashboard and OAuth-page tests: Debian's Chromium (the `chromium`
// package), driven headless by playwright-core through `executablePath` (playwright's own browser
// downloads are not used). Each launch gets a fresh profile in a temporary directory, so every
// test starts signed out with no cookies. Screenshots go to <repo>/target/dashboard-screenshots/.

import { execFileSync } from 'node:child_process';
import { accessSync, constants, mkdirSync, rmSync } from 'node:fs';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { tempDir } from './proc.mjs';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Where every test's full-page screenshots are kept for a person to look at. */
export const SCREENSHOT_DIR = join(repo, 'target', 'dashboard-screenshots');

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

function executable(path) {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The places looked at, in order: `E2E_CHROMIUM`, Debian's /usr/bin/chromium, then PATH. */
export function chromiumCandidates() {
  const onPath = (process.env.PATH || '')
    .split(delimiter)
    .filter(Boolean)
    .flatMap((d) => [join(d, 'chromium'), join(d, 'chromium-browser')]);
  return [...new Set([process.env.E2E_CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser', ...onPath].filter(Boolean))];
}

/** The Chromium binary to drive, or undefined when there is none. */
export function findChromium() {
  if (process.env.E2E_CHROMIUM) return executable(process.env.E2E_CHROMIUM) ? process.env.E2E_CHROMIUM : undefined;
  return chromiumCandidates().find(executable);
}

/** `Chromium 156.0… at /usr/bin/chromium`, or why there is none (for scripts/e2e.sh's header). */
export function describeChromium() {
  const bin = findChromium();
  if (!bin) return `not found (${missingChromiumMessage()})`;
  try {
    const v = execFileSync(bin, ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000 });
    return `${v.trim().split('\n')[0]} at ${bin}`;
  } catch (e) {
    return `${bin} (--version failed: ${e.message.split('\n')[0]})`;
  }
}

export function missingChromiumMessage() {
  const where = process.env.E2E_CHROMIUM
    ? `E2E_CHROMIUM=${process.env.E2E_CHROMIUM} is not an executable`
    : `looked for ${chromiumCandidates().join(', ')}`;
  return `no Chromium for the browser tests (${where}); install Debian's package: apt-get install -y chromium`;
}

/** True when running in CI (`CI=true`): a missing browser is then a failure, not a skip. */
export function inCI() {
  return ['true', '1'].includes(String(process.env.CI || '').toLowerCase());
}

/**
 * Starts Chromium with a fresh profile; resolves with `{ context, page, close }`. The context
 * keeps cookies per profile, so each call is a new person at a new browser.
 */
export async function openBrowser({ viewport = { width: 1280, height: 900 } } = {}) {
  const executablePath = findChromium();
  if (!executablePath) throw new Error(missingChromiumMessage());
  const profile = tempDir('chromium');
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    args: CHROMIUM_ARGS,
    headless: true,
    viewport,
  });
  context.setDefaultTimeout(10_000);
  context.setDefaultNavigationTimeout(15_000);
  const page = context.pages()[0] ?? (await context.newPage());
  /** Page errors and console errors, for failure messages. */
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()}`);
  });
  return {
    context,
    page,
    problems,
    close: () => context.close().catch(() => {}),
  };
}

/** A full-page screenshot at <repo>/target/dashboard-screenshots/<name>.png; returns the path. */
export async function screenshot(page, name) {
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  const path = join(SCREENSHOT_DIR, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/**
 * Runs `fn({ context, page, problems })` in a fresh browser, closing it afterwards. When `fn` throws,
 * a screenshot `<name>-failure.png` is taken, and the page's URL, its headings, the screenshot's
 * path and any page errors are attached to the error (shown by the test reporter).
 */
export async function withBrowser(name, fn) {
  rmSync(join(SCREENSHOT_DIR, `${name}-failure.png`), { force: true });
  const b = await openBrowser();
  try {
    return await fn(b);
  } catch (e) {
    if (e && typeof e === 'object') {
      const at = { url: b.page.url() };
      try {
        at.headings = await b.page.getByRole('heading').allInnerTexts();
        at.screenshot = await screenshot(b.page, `${name}-failure`);
      } catch {
        // the page is gone; the URL is all there is
      }
      if (b.problems.length) at.problems = b.problems.slice(0, 5);
      e.browserPage = at;
    }
    throw e;
  } finally {
    await b.close();
  }
}
