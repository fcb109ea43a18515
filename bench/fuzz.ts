/**
 * `npm run fuzz:long`: the fuzzer of test/fuzz/engine.ts for as long as
 * asked, against one gateway process, checking the oracles after every
 * round (process alive, no hung session, descriptors back to baseline,
 * spool whole and CRLF-only). Prints the seed and the first failing round;
 * exit status 1 on any failure.
 * Flags: --sessions N (default 50,000) --minutes M (stop after M minutes)
 *        --seed S --concurrency C (default 48) --round R (sessions per check, 5,000)
 */
import { parseArgs } from 'node:util';
import { sendOne } from '../test/security/util';
import { alive, checkSpool, fdCount, runFuzz, settleFds, startFuzzTarget } from '../test/fuzz/engine';

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      sessions: { type: 'string', default: '50000' },
      minutes: { type: 'string' },
      seed: { type: 'string' },
      concurrency: { type: 'string', default: '48' },
      round: { type: 'string', default: '5000' },
    },
  });
  const seed = values.seed ? Number(values.seed) : Math.floor(Math.random() * 2 ** 31);
  const total = Number(values.sessions);
  const until = values.minutes ? Date.now() + Number(values.minutes) * 60_000 : Infinity;
  const round = Number(values.round);
  console.log(`fuzz: seed ${seed}, up to ${total} sessions${values.minutes ? ` or ${values.minutes} min` : ''}, concurrency ${values.concurrency}`);
  const target = await startFuzzTarget();
  let failed = false;
  try {
    if ((await sendOne(target.ports.intercept, { ip: '127.0.0.5', from: 'me@home.test', to: 'a@dest.test' })) !== 250) throw new Error('gateway not accepting mail at start');
    const fd0 = await settleFds(target.pid, fdCount(target.pid), 0, 1500);
    let done = 0;
    const t0 = Date.now();
    while (done < total && Date.now() < until) {
      const n = Math.min(round, total - done);
      const stats = await runFuzz(target, { seed, sessions: n, concurrency: Number(values.concurrency), from: done });
      done += n;
      const fd1 = await settleFds(target.pid, fd0);
      const spool = await checkSpool(target.dir);
      const problems = [
        ...(alive(target.pid) ? [] : ['gateway process died']),
        ...stats.hung.map((h) => `hung: session ${h.n} (${h.kind}/${h.ending}, replies ${h.codes.join(',')})`),
        ...(fd1 > fd0 + 3 ? [`descriptors ${fd0} → ${fd1}`] : []),
        ...spool.problems,
      ];
      console.log(`sessions ${done - n}..${done - 1}: ${((Date.now() - t0) / 1000).toFixed(0)} s, longest ${stats.maxMs} ms, fds ${fd1}, queued ${spool.queued}, replies ${JSON.stringify(stats.codes)}${problems.length ? `, PROBLEMS: ${problems.slice(0, 10).join('; ')}` : ''}`);
      if (problems.length) {
        failed = true;
        console.log(`replay: FUZZ_SEED=${seed} (sessions from ${done - n})`);
        if (!alive(target.pid)) console.log(target.gw.output().slice(-5000));
        break;
      }
    }
    if (!failed && (await sendOne(target.ports.intercept, { ip: '127.0.0.5', from: 'me@home.test', to: 'b@dest.test' })) !== 250) {
      failed = true;
      console.log('gateway no longer accepts mail');
    }
  } finally {
    await target.stop();
  }
  console.log(failed ? 'fuzz: FAILED' : 'fuzz: ok');
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
