/**
 * The lab's HTTP server, run inside the server namespace by `sluice lab up`:
 *   node dist/src/lab/http-server.js PORT
 * Answers every request with a short text body, on every address of the namespace (IPv4 and
 * IPv6). Prints "listening" once it accepts connections; runs until it is killed (`lab down`).
 */
import { createServer } from 'node:http';

const port = Number(process.argv[2] ?? 80);
const body = Buffer.from('sluice lab: ok\n');
const server = createServer((req, res) => {
  req.resume();
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
  res.end(body);
});
server.keepAliveTimeout = 30_000;
// '::' with ipv6Only false takes IPv4 too (as IPv4-mapped addresses).
server.listen({ port, host: '::', ipv6Only: false }, () => {
  process.stdout.write(`listening on port ${port}\n`);
});
// The parent closes its end of stdout after "listening": never die of EPIPE for a log line.
process.stdout.on('error', () => undefined);
