/**
 * smtp-server as smarthost's listeners set it up (src/smtp/server-adapter.ts
 * applied; no reverse lookup, no greeting pause, no AUTH or STARTTLS on
 * offer), answering every message with a 250 and dropping it: bench/floor.ts
 * compares it with floor-relay.ts's `--mode answer` to price the SMTP layer
 * alone.
 * Run: node dist/bench/floor-smtp-server.js --port P
 */
import type { Readable } from 'node:stream';
import { parseArgs } from 'node:util';
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';
import { adaptSmtpServer } from '../src/smtp/server-adapter';

const { values } = parseArgs({ options: { port: { type: 'string' } } });
adaptSmtpServer();
const options: SMTPServerOptions & Record<string, unknown> = {
  name: 'floor.bench.invalid',
  disabledCommands: ['AUTH', 'STARTTLS'],
  authOptional: true,
  disableReverseLookup: true,
  greetDelayMs: 0,
  logger: false,
  size: 10 << 20,
  onData(stream: Readable, _session, cb) {
    const parts: Buffer[] = [];
    stream.on('data', (c: Buffer) => parts.push(c));
    stream.on('end', () => cb(null, `Ok: ${Buffer.concat(parts).length} bytes`));
  },
};
new SMTPServer(options).listen(Number(values.port), '127.0.0.1', () => process.send?.('ready'));
process.on('SIGTERM', () => process.exit(0));
