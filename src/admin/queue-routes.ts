/**
 * Queue operations over the admin API (what `smarthost queue …` calls on a
 * running gateway, so the queue manager's in-memory schedule stays right).
 */
import type { QueueManager } from '../spool/qmgr';
import { isQueueId } from '../spool/queue-id';
import type { AdminServer, ApiResponse } from './server';

const badId: ApiResponse = { status: 400, body: { error: 'not a queue id' } };
const notFound: ApiResponse = { status: 404, body: { error: 'no such message (or in the wrong state for this action)' } };

export function registerQueueRoutes(admin: AdminServer, qmgr: QueueManager): void {
  admin.route('GET', '/api/queue', async () => ({ status: 200, body: await qmgr.list() }));
  admin.route('GET', '/api/queue/:id', async ({ params }) => {
    if (!isQueueId(params.id!)) return badId;
    const e = await qmgr.entry(params.id!);
    return e ? { status: 200, body: e } : notFound;
  });
  admin.route('POST', '/api/queue/flush', async () => ({ status: 200, body: { flushed: qmgr.flush() } }));
  admin.route('POST', '/api/queue/:id/:op', async ({ params }) => {
    const id = params.id!;
    if (!isQueueId(id)) return badId;
    let ok: boolean;
    switch (params.op) {
      case 'flush':
        ok = qmgr.flush(id) > 0;
        break;
      case 'hold':
        ok = await qmgr.hold(id);
        break;
      case 'release':
        ok = await qmgr.release(id);
        break;
      case 'delete':
        ok = await qmgr.delete(id);
        break;
      default:
        return { status: 404, body: { error: `unknown operation ${params.op}` } };
    }
    return ok ? { status: 200, body: { id, op: params.op, ok } } : notFound;
  });
}
