/** The check types rules.yaml can name, one file each. */
import type { CheckType } from '../rule';
import { accountNetworkCheck, accountStateCheck } from './account';
import { authFailuresCheck } from './auth-failures';
import { dnsblCheck } from './dnsbl';
import { envelopeSenderCheck, headerFromCheck } from './identity';
import { clientList, recipientList, senderList } from './lists';
import { quotaCheck } from './quota';

export const CHECK_TYPES: ReadonlyMap<string, CheckType> = new Map(
  [clientList, senderList, recipientList, dnsblCheck, quotaCheck, authFailuresCheck, envelopeSenderCheck, headerFromCheck, accountStateCheck, accountNetworkCheck].map(
    (c) => [c.name, c],
  ),
);
