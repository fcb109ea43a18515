/**
 * smarthost's own SMTP layer (src/smtp/server.ts and connection.ts, as the
 * listeners run it: no greeting pause, no AUTH or STARTTLS on offer) with a
 * session that reads every message to its end, answers 250 and drops it:
 * bench/floor.ts compares it with floor-relay.ts's `--mode answer` to price
 * the SMTP layer alone.
 * Run: node dist/bench/floor-smtp-server.js --port P
 */
import { parseArgs } from 'node:util';
import { acceptAllServer } from '../test/helpers/accept-all';

const { values } = parseArgs({ options: { port: { type: 'string' } } });
acceptAllServer({ hostname: 'floor.bench.invalid' }).listen({ port: Number(values.port), host: '127.0.0.1' }, () => process.send?.('ready'));
process.on('SIGTERM', () => process.exit(0));
