/**
 * The DKIM stage's public surface: config section, signer, key files and the
 * operator functions. See sign.ts for how a message is signed and keys.ts
 * for the key layout and rotation rules.
 */
export type { MessageSigner, SignResult, SigningAuthority, SigningDecision, SigningRequest } from './types';
export { parseDkimConfig, DEFAULT_SIGNED_HEADERS, type DkimConfig, type UnsignedPolicy } from './config';
export { DkimSigner, DkimSignError, createSigner, type DkimStatus, type OnSigned, type SignerOptions, type SignOutcome } from './sign';
export { loadKeys, publicRecord, KeyRing, type DkimKey, type KeyAlgorithm, type KeyProblem, type KeyState } from './keys';
export { dkimKeygen, dkimCheck, type KeygenOptions, type KeygenResult, type CheckOptions, type CheckResult, type SelectorCheck } from './cli';
