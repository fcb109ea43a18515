#!/bin/sh
# `npm test`'s pretest: make this machine able to run the whole suite, so that
# nothing is skipped for a missing tool. Installs the Debian packages the
# tests spawn (only when one is missing: a dpkg check, no apt-get update, when
# all are present) and starts the machine's shared Redis on 127.0.0.1:6379.
# Where it cannot (not root, no apt-get) it names what is missing and fails.
set -eu

# What each package gives the tests:
#   prometheus     prometheus + promtool (test/metrics: real scrapes, rule tests)
#   redis-server   redis-server, redis-cli (test/state, test/fleet: private servers,
#                  sentinel; the shared 6379 below)
#   dovecot-pop3d  dovecot (test/roles/dovecot: POP-before-SMTP)
#   dovecot-imapd  IMAP (test/feedback/imap: complaint reports from a mailbox)
#   python3-dkim   dkimpy, the second DKIM verifier (test/dkim/dkimpy)
#   rspamd         rspamd (test/content: private instances, not the package's service)
#   systemd        systemd-analyze (test/deploy: verifies deploy/smarthost.service)
#   postfix        a real Postfix in front of smarthost (test/postfix: policy service,
#                  milter) and smtp-source/-sink for the benchmark's reference load
#   swaks          the README's tour
#   unbound, ldnsutils, nsd  test/relay/dane.test.ts: a zone signed with ldns-signzone,
#                  served by nsd, validated by a private unbound (a real AD bit)
#   python3-fusepy, fuse3  the power-loss test's FUSE disk (test/helpers/powercut_fs.py;
#                  needs /dev/fuse and root, as CI has)
#   chromium       the headless browser of the console tests (test/console, driven by
#                  npm's playwright-core, which downloads no browser of its own)
#   g++, make      node-gyp's build of native/tcp_quickack.c (npm's install step;
#                  test/e2e/data-quick-ack fails without it); rebuilt below if missing
PKGS="g++ make prometheus redis-server dovecot-pop3d dovecot-imapd swaks postfix python3-dkim rspamd systemd python3-fusepy fuse3 chromium unbound ldnsutils nsd"

missing=""
for p in $PKGS; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
missing="${missing# }"

if [ -n "$missing" ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "test setup: missing Debian packages: $missing (as root: apt-get install --no-install-recommends $missing)" >&2
    exit 1
  fi
  echo "test setup: installing $missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  # postfix asks at install time: answer "No configuration" (tests run private instances).
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  # shellcheck disable=SC2086 # one word per package
  if ! apt-get install -y -qq --no-install-recommends $missing >/tmp/smarthost-test-setup-apt.log 2>&1; then
    echo "test setup: apt-get install $missing failed (see /tmp/smarthost-test-setup-apt.log)" >&2
    exit 1
  fi
fi

# The native helper: npm's install step skips it (with a warning) where it cannot build.
if [ ! -f build/Release/tcp_quickack.node ]; then
  node scripts/build-native.js
  [ -f build/Release/tcp_quickack.node ] || { echo "test setup: native/tcp_quickack.c did not build (node-gyp, see above)" >&2; exit 1; }
fi

# The machine's shared Redis: tests that need one server for several gateways use it.
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /tmp --logfile /tmp/smarthost-test-redis.log
  i=0
  until redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -ge 100 ]; then
      echo "test setup: redis-server did not answer on 127.0.0.1:6379 (see /tmp/smarthost-test-redis.log)" >&2
      exit 1
    fi
    sleep 0.1
  done
fi
