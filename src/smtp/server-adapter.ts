/**
 * How smtp-server (3.21.x, pinned in package.json) is adapted. Each change
 * below patches one method of SMTPConnection's prototype, and each is
 * covered by a test that fails if an upgrade changes the behaviour
 * (test/smtp/adapter.test.ts):
 *
 * 1. Reply text that already starts with an RFC 3463 enhanced status
 *    ("5.7.1 ...") is sent as is: smtp-server would otherwise derive an
 *    enhanced code from the basic code alone (554 → 5.6.0, wrong for a
 *    relay denial). Our replies come from src/smtp/replies.ts.
 * 2. 538 (AUTH before STARTTLS) carries 5.7.11 (RFC 3463/4954
 *    "encryption required for requested authentication mechanism"), not
 *    the library's 5.7.0.
 * 3. AUTH is not advertised in EHLO before TLS on listeners that only
 *    allow AUTH over TLS (the library advertises it and then refuses it).
 * 4. The greeting pause: the library waits a fixed 100 ms before every
 *    greeting (early-talker detection). That is a policy decision, so the
 *    listener's `greetDelayMs` sets it (0 on authenticated submission).
 */
import { SMTPServer } from 'smtp-server';

// The connection class is not exported by name; reach it the way the
// server itself constructs connections.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { SMTPConnection } = require('smtp-server/lib/smtp-connection') as { SMTPConnection: { prototype: ConnectionProto } };

interface ConnectionProto {
  send(code: number, data?: string | string[], context?: string | false): void;
  _getEnhancedStatusCode(code: number, context?: string | false): string;
  init(): void;
  connectionReady(next?: () => void): void;
  _setListeners(cb: () => void): void;
  secure: boolean;
  _server: { options: Record<string, unknown>; connections: Set<unknown> } & SMTPServer;
  name: string;
}

const ENHANCED_PREFIX = /^[245]\.\d{1,3}\.\d{1,3} /;
let applied = false;

export function adaptSmtpServer(): void {
  if (applied) return;
  applied = true;
  const proto = SMTPConnection.prototype;

  const origSend = proto.send;
  proto.send = function send(this: ConnectionProto, code, data, context) {
    if (typeof data === 'string' && ENHANCED_PREFIX.test(data)) return origSend.call(this, code, data, false);
    if (Array.isArray(data) && !this.secure && this._server.options.authOnlyAfterTls === true) {
      data = data.filter((line) => !/^AUTH\b/i.test(line));
    }
    return origSend.call(this, code, data, context);
  };

  const origEnhanced = proto._getEnhancedStatusCode;
  proto._getEnhancedStatusCode = function getEnhanced(this: ConnectionProto, code, context) {
    const derived = origEnhanced.call(this, code, context);
    return code === 538 && derived ? '5.7.11' : derived;
  };

  proto.init = function init(this: ConnectionProto) {
    this._setListeners(() => {
      const opts = this._server.options;
      if (typeof opts.maxClients === 'number' && opts.maxClients && this._server.connections.size > opts.maxClients) {
        return this.send(421, `${this.name} Too many connected clients, try again in a moment`, false);
      }
      const delay = typeof opts.greetDelayMs === 'number' ? opts.greetDelayMs : 100;
      if (delay <= 0) return this.connectionReady();
      setTimeout(() => this.connectionReady(), delay).unref();
    });
  };
}
