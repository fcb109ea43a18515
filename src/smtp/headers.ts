/**
 * Just enough RFC 5322 header parsing for policy: unfold the header block,
 * find fields by name, pull addresses out of address lists (display names,
 * comments, quoted strings and groups understood, not interpreted).
 */

export interface HeaderField {
  name: string;
  /** Unfolded value, without the leading space. */
  value: string;
}

export function parseHeaderBlock(block: Buffer): HeaderField[] {
  const text = block.toString('latin1');
  const fields: HeaderField[] = [];
  for (const line of text.split(/\r\n/)) {
    if (line === '') break;
    if ((line.startsWith(' ') || line.startsWith('\t')) && fields.length > 0) {
      fields[fields.length - 1]!.value += ` ${line.trim()}`;
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    fields.push({ name: line.slice(0, colon).trim().toLowerCase(), value: line.slice(colon + 1).trim() });
  }
  return fields;
}

/** Addresses (lower case) in an address-list header value such as From or To. */
export function extractAddresses(value: string): string[] {
  // Drop comments (non-nested is enough for policy) and quoted display names.
  const cleaned = value.replace(/"(?:[^"\\]|\\.)*"/g, '""').replace(/\([^()]*\)/g, ' ');
  const out: string[] = [];
  const angle = /<([^<>]*)>/g;
  let rest = cleaned;
  let m: RegExpExecArray | null;
  while ((m = angle.exec(cleaned)) !== null) {
    const addr = m[1]!.trim();
    if (addr.includes('@')) out.push(addr.toLowerCase());
  }
  rest = cleaned.replace(angle, ' ');
  // Group syntax "name: a@b, c@d;" and bare addresses.
  for (const part of rest.replace(/^[^:@]*:/, '').split(/[,;]/)) {
    const token = part.trim().split(/\s+/).find((t) => /^[^@\s]+@[^@\s]+$/.test(t));
    if (token) out.push(token.toLowerCase());
  }
  return out;
}
