/**
 * Delivery to a throttling provider with and without adaptive shaping
 * (docs/shaping.md). One in-process gateway per run, a real DNS server and a
 * throttling sink on loopback (test/relay/throttling-sink.ts) that allows
 * each sending address 10 messages per second, 5 sessions and 5 messages per
 * session, and answers 421 4.7.0 beyond that. 200 messages go in over one
 * SMTP session; the run ends when the queue is empty (or after 120 s).
 *
 *   off        relay.shaping.enabled: false — 421s are ordinary deferrals (backoff 2s, 4s, 8s…)
 *   adaptive   shaping on, no static limits for the provider: suspensions on its 421s only
 *   limits     shaping on with limits matching the provider (5 sessions, 5/session, 10/s)
 *
 * Usage: npm run build && node dist/bench/shaping.js [messages]
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { startDnsServer } from '../test/helpers/dns-server';
import { startGateway } from '../test/helpers/gateway';
import { message, RawSmtp } from '../test/helpers/smtp-client';
import { startThrottlingGroup } from '../test/relay/throttling-sink';

const MESSAGES = Number(process.argv[2] ?? 200);
const BOUND_MS = 120_000;

const RUNS: Record<string, Record<string, unknown>> = {
  off: { enabled: false },
  adaptive: { providers: { bigmail: { mx: ['bigmail.test'], suspend: '1s', maxSuspend: '8s', recover: '1s' } } },
  limits: { providers: { bigmail: { mx: ['bigmail.test'], maxConnections: 5, messagesPerConnection: 5, rate: '10/s', suspend: '1s', maxSuspend: '8s', recover: '1s' } } },
};

async function run(name: string, shaping: Record<string, unknown>): Promise<void> {
  const dns = await startDnsServer();
  const { port, sink } = await startThrottlingGroup({ host: '127.0.0.46', limits: { maxConnections: 5, messagesPerConnection: 5, perWindow: 10, windowMs: 1000 } }, []);
  dns.set('users.bigmail.test', 'MX', [{ exchange: 'mx.bigmail.test', priority: 10 }]);
  dns.set('mx.bigmail.test', 'A', ['127.0.0.46']);
  const gw = await startGateway({
    config: { relay: { dns: { servers: [dns.server], timeout: '1s' }, mxPort: port, backoff: ['2s', '4s', '8s', '16s'], poolIdle: '1s', shaping } },
  });
  try {
    const c = await RawSmtp.connect(gw.port('intercept'), { localAddress: '127.0.0.3' });
    await c.reply();
    await c.cmd('EHLO sender.test');
    const start = Date.now();
    for (let i = 0; i < MESSAGES; i++) {
      await c.cmd('MAIL FROM:<someone@sender.test>');
      await c.cmd(`RCPT TO:<user${i}@users.bigmail.test>`);
      await c.data(message({ from: 'someone@sender.test', to: `user${i}@users.bigmail.test` }));
    }
    await c.quit();
    while (sink.mx.messages.length < MESSAGES && Date.now() - start < BOUND_MS) await sleep(50);
    const ms = Date.now() - start;
    const done = sink.mx.messages.length;
    const sessions = sink.mx.connections.total;
    console.log(
      `${name.padEnd(9)} delivered ${done}/${MESSAGES} in ${(ms / 1000).toFixed(1)} s (${((done * 1000) / ms).toFixed(1)} msg/s); ` +
        `421 replies ${sink.refusals.length}; sessions opened ${sessions}; attempts per message ${((sink.mails.length + sink.refusals.length) / MESSAGES).toFixed(2)}`,
    );
  } finally {
    await gw.stop();
    await sink.mx.close();
    await dns.close();
  }
}

async function main(): Promise<void> {
  for (const [name, shaping] of Object.entries(RUNS)) await run(name, shaping);
}

void main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
