// Preloaded (`node --import`) into servers that listen on every interface by themselves
// (`@modelcontextprotocol/server-everything` calls `app.listen(PORT)`): every TCP listen without
// an explicit host binds 127.0.0.1 instead, and the bound port is reported on stderr as
// `e2e-listening 127.0.0.1 PORT`, so the server can be started on port 0.

import net from 'node:net';

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function patchedListen(...args) {
  const first = args[0];
  if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
    if (typeof args[1] !== 'string') args.splice(1, 0, '127.0.0.1');
  } else if (first && typeof first === 'object' && first.path === undefined && first.host === undefined) {
    args[0] = { ...first, host: '127.0.0.1' };
  }
  this.once('listening', () => {
    const a = this.address();
    if (a && typeof a === 'object') process.stderr.write(`e2e-listening ${a.address} ${a.port}\n`);
  });
  return listen.apply(this, args);
};
