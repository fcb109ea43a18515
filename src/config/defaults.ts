/**
 * The embedded defaults behind `npm start` with no config file: a working
 * gateway for trying things out on one machine. Listeners are bound to
 * loopback on unprivileged ports so it runs without root and is never an
 * open relay by accident; state lives under ./var. The first start creates
 * a self-signed certificate and a demo account (password printed once and
 * saved in var/demo-account.txt). For production see smarthost.example.yaml.
 */
export const EMBEDDED_DEFAULTS = `
listeners:
  - { name: submission, role: submission, address: 127.0.0.1, port: 2587, security: starttls }
  - { name: submissions, role: submission, address: 127.0.0.1, port: 2465, security: implicit }
  - { name: intercept, role: intercept, address: 127.0.0.1, port: 2525, security: starttls }
serverTls: { selfSigned: true }
spool: { dir: var/spool }
accounts: { file: var/accounts.yaml }
policy: { dir: policies }
admin: { address: 127.0.0.1, port: 8025 }
log: { level: info }
dkim: { keysDir: var/dkim, signingDomain: example.net }
`;
