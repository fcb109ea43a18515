/**
 * The queue owner's part of a process (single, primary): spool and journal
 * recovery before any delivery (a dead worker's journal segments too), the
 * admin API, the mailbox-log follower whose grants go to the shared store,
 * and the Postfix policy service and milter.
 */
import type { AdminServer } from '../admin/server';
import type { Logger } from '../log';
import type { PostfixServices } from '../postfix/index';
import type { Roles } from '../roles/index';
import { recoverJournal } from '../spool/journal';
import { recoverSpool } from '../spool/recover';
import type { Spool } from '../spool/store';
import type { ProcessPart } from './roles';

export interface QueueOwnerDeps {
  admin: AdminServer;
  spool: Spool;
  /** Where every process's journal segments are. */
  journalDir: string;
  roles: Roles;
  postfix: PostfixServices | undefined;
  logger: Logger;
}

export function queueOwner(d: QueueOwnerDeps): ProcessPart {
  return {
    bind: () => d.admin.bind(),
    async prepare() {
      await recoverSpool(d.spool, d.logger);
      await recoverJournal(d.journalDir, d.spool, d.logger);
    },
    async open() {
      await d.roles.start();
      await d.admin.listen();
      await d.postfix?.start();
    },
    async close() {
      await d.postfix?.stop();
      await d.roles.stop();
    },
  };
}
