// A small reverse proxy on 127.0.0.1 that passes everything through as it is (method, path,
// headers with Host, bodies, streamed responses) and records each exchange. Used twice: in front
// of the gateway to add a bearer token for the conformance suite (which takes only a URL), and
// between the gateway and server-everything to see what reaches the upstream.

import { request as httpRequest, createServer } from 'node:http';

/**
 * @param {string} target origin to forward to, e.g. `http://127.0.0.1:8080`
 * @param {object} [o]
 * @param {Record<string, string>} [o.addHeaders] set on every forwarded request
 * @returns {Promise<{origin: string, exchanges: object[], stop: () => Promise<void>}>} where each
 *   exchange is `{ method, path, headers, status, clientClosed? }` (`status` 0: no answer)
 */
export async function reverseProxy(target, { addHeaders = {} } = {}) {
  const t = new URL(target);
  const exchanges = [];
  const server = createServer((req, res) => {
    const headers = { ...req.headers, ...addHeaders };
    const exchange = { method: req.method, path: req.url, headers: req.headers, at: Date.now(), status: undefined };
    exchanges.push(exchange);
    const upstream = httpRequest({ host: t.hostname, port: t.port, method: req.method, path: req.url, headers }, (up) => {
      exchange.status = up.statusCode;
      up.on('error', () => res.destroy());
      res.writeHead(up.statusCode, up.rawHeaders);
      res.flushHeaders();
      up.pipe(res);
    });
    upstream.on('error', (e) => {
      if (exchange.status === undefined && !exchange.clientClosed) {
        exchange.status = 0;
        exchange.error = e.message;
      }
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    // Either side hanging up mid-stream ends the exchange; it is not an error of the proxy's.
    req.on('error', () => upstream.destroy());
    res.on('error', () => upstream.destroy());
    req.pipe(upstream);
    res.on('close', () => {
      // The client went away before an answer came (it closes streams it is done with):
      // that is no answer of the target's.
      if (exchange.status === undefined) exchange.clientClosed = true;
      upstream.destroy();
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    origin: `http://127.0.0.1:${server.address().port}`,
    exchanges,
    stop: () =>
      new Promise((r) => {
        server.closeAllConnections?.();
        server.close(r);
      }),
  };
}
