// The person at the browser: opens the authorization URL an MCP client hands over, follows
// redirects, keeps cookies (per host, as browsers do: not per port), fills the sign-in form with
// their email and password and presses "Allow" on the consent page, until the authorization
// server sends the browser back to the client's redirect URI. Plain HTTP, no JavaScript: the
// pages of ezForge and of the test identity provider work without it.

export class Browser {
  constructor({ email, password }) {
    this.email = email;
    this.password = password;
    /** @type {{host: string, name: string, value: string, path: string}[]} */
    this.jar = [];
    /** `METHOD path -> status` for each request. */
    this.hops = [];
    /** The pages shown (URL, title, visible text), in order. */
    this.pages = [];
  }

  cookieHeader(url) {
    const cookies = this.jar.filter((c) => c.host === url.hostname && url.pathname.startsWith(c.path));
    return cookies.length ? cookies.map((c) => `${c.name}=${c.value}`).join('; ') : undefined;
  }

  keepCookies(url, resp) {
    for (const header of resp.headers.getSetCookie()) {
      const [pair, ...attrs] = header.split(';').map((s) => s.trim());
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      let path = '/';
      let expired = false;
      for (const attr of attrs) {
        const [k, v = ''] = attr.split('=');
        if (k.toLowerCase() === 'path') path = v;
        if (k.toLowerCase() === 'max-age' && Number(v) <= 0) expired = true;
        if (k.toLowerCase() === 'expires' && Date.parse(attr.slice(8)) < Date.now()) expired = true;
      }
      this.jar = this.jar.filter((c) => !(c.host === url.hostname && c.name === name && c.path === path));
      if (!expired) this.jar.push({ host: url.hostname, name, value, path });
    }
  }

  /**
   * Opens `start` and goes wherever the servers lead, signing in and allowing when asked,
   * until a redirect to `redirectUri`; returns that URL (with `code`, `state`, `iss`).
   * With `decision: 'deny'` the person presses "Deny" instead.
   */
  async authorize(start, redirectUri, { decision = 'allow' } = {}) {
    let method = 'GET';
    let url = new URL(start);
    let form;
    for (let i = 0; i < 15; i += 1) {
      const headers = {};
      const cookie = this.cookieHeader(url);
      if (cookie) headers.cookie = cookie;
      let body;
      if (method === 'POST') {
        headers['content-type'] = 'application/x-www-form-urlencoded';
        headers.origin = url.origin;
        body = new URLSearchParams(form).toString();
      }
      const resp = await fetch(url, { method, headers, body, redirect: 'manual' });
      this.keepCookies(url, resp);
      this.hops.push(`${method} ${url.pathname} -> ${resp.status}`);
      if (resp.status >= 300 && resp.status < 400) {
        await resp.body?.cancel();
        const target = new URL(resp.headers.get('location'), url);
        if (target.href.startsWith(redirectUri)) return target.href;
        method = 'GET';
        url = target;
        form = undefined;
        continue;
      }
      const page = await resp.text();
      if (resp.status !== 200) {
        throw new Error(`${method} ${url.pathname} answered ${resp.status}: ${visibleText(page).slice(0, 500)}`);
      }
      this.pages.push({ url: url.href, title: (/<title>([^<]*)<\/title>/i.exec(page) ?? [])[1], text: visibleText(page) });
      const filled = fillForm(page, { email: this.email, password: this.password, decision });
      method = 'POST';
      url = new URL(filled.action || url.href, url);
      form = filled.fields;
    }
    throw new Error(`too many hops: ${this.hops.join(', ')}`);
  }
}

const entities = { '&quot;': '"', '&lt;': '<', '&gt;': '>', '&#x27;': "'", '&#39;': "'", '&amp;': '&' };
function unescape(s) {
  return s.replace(/&(quot|lt|gt|#x27|#39|amp);/g, (m) => entities[m]);
}

/** The attributes of each `<tag …>` in `html`. */
export function tags(html, tag) {
  const out = [];
  const re = new RegExp(`<${tag}\\b([^>]*)>`, 'gi');
  for (const m of html.matchAll(re)) {
    const attrs = {};
    for (const a of m[1].matchAll(/([a-zA-Z_:-]+)(?:\s*=\s*"([^"]*)")?/g)) attrs[a[1].toLowerCase()] = unescape(a[2] ?? '');
    out.push(attrs);
  }
  return out;
}

/** The page's first form, filled in the way a person would. */
export function fillForm(page, { email, password, decision }) {
  const start = page.search(/<form\b/i);
  if (start < 0) throw new Error(`no form on the page: ${visibleText(page).slice(0, 500)}`);
  const end = page.indexOf('</form>', start);
  const html = page.slice(start, end < 0 ? undefined : end);
  const action = tags(html, 'form')[0].action;
  const fields = [];
  for (const input of tags(html, 'input')) {
    if (!input.name) continue;
    const type = (input.type || 'text').toLowerCase();
    if (type === 'hidden') fields.push([input.name, input.value ?? '']);
    else if (type === 'password') fields.push([input.name, password]);
    else if (type === 'email' || ['email', 'login', 'username'].includes(input.name)) fields.push([input.name, email]);
    else if (type === 'submit' && input.value === decision) fields.push([input.name, input.value]);
    else throw new Error(`unexpected input ${JSON.stringify(input)}`);
  }
  for (const button of tags(html, 'button')) {
    if (button.name && button.value === decision) fields.push([button.name, button.value]);
  }
  return { action, fields };
}

/** The text a person reads on a page. */
export function visibleText(html) {
  return unescape(
    html
      .replace(/<(style|script)\b[\s\S]*?<\/\1>/gi, '')
      .replace(/<[^>]+>/g, ' ')
      .replace(/\s+/g, ' ')
      .trim(),
  );
}
