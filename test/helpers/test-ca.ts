/**
 * A private certificate authority for tests: one CA, and leaf certificates
 * it signs for the names a test asks for (server auth, SAN DNS names). The
 * CA's PEM goes into a config's `ca` (instead of the system roots).
 */
import { generate } from 'selfsigned';

export interface Leaf {
  readonly key: string;
  readonly cert: string;
}

export interface TestCa {
  readonly caPem: string;
  leaf(names: readonly string[]): Promise<Leaf>;
}

export async function startTestCa(commonName = 'Smarthost Test CA'): Promise<TestCa> {
  const ca = await generate([{ name: 'commonName', value: commonName }], {
    keySize: 2048,
    algorithm: 'sha256',
    extensions: [
      { name: 'basicConstraints', cA: true, critical: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    ],
  });
  return {
    caPem: ca.cert,
    async leaf(names) {
      const l = await generate([{ name: 'commonName', value: names[0] }], {
        keySize: 2048,
        algorithm: 'sha256',
        ca: { key: ca.private, cert: ca.cert },
        extensions: [
          { name: 'basicConstraints', cA: false, critical: true },
          { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
          { name: 'extKeyUsage', serverAuth: true },
          { name: 'subjectAltName', altNames: names.map((value) => ({ type: 2, value })) },
        ],
      });
      return { key: l.private, cert: l.cert };
    },
  };
}
