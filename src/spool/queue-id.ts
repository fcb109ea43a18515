/**
 * Queue IDs: sortable by arrival (base-36 milliseconds first) and unique
 * across processes sharing one spool (random tail), safe as file names.
 */
import { randomBytes } from 'node:crypto';
import type { QueueId } from '../envelope';

let lastMs = 0;
let seq = 0;
// Random per process, not per id: uniqueness across processes needs only
// that, and randomBytes per message showed up in profiles.
const processTag = randomBytes(4).readUInt32BE(0);

export function newQueueId(now = Date.now()): QueueId {
  if (now === lastMs) seq++;
  else {
    lastMs = now;
    seq = 0;
  }
  return `${now.toString(36).toUpperCase().padStart(9, '0')}${seq.toString(36).toUpperCase().padStart(2, '0')}${processTag.toString(16).toUpperCase().padStart(8, '0')}`;
}

const ID_RE = /^[0-9A-Z]{11}[0-9A-F]{8}$/;

export function isQueueId(s: string): s is QueueId {
  return ID_RE.test(s);
}

/** The tail every queue id made by this process ends with (which process committed it). */
export function processIdSuffix(): string {
  return processTag.toString(16).toUpperCase().padStart(8, '0');
}
