import type { PeerCertificate } from 'node:tls';

/** Which name of a client certificate names the principal. */
export type CertPrincipalSource = 'cn' | 'san-uri' | 'san-dns' | 'san-email';

/** The names a certificate carries: its subject's common name and its subject alternative names by kind. */
export interface CertNames {
  /** undefined when the subject has no CN, or more than one (which one would be meant is not ours to guess). */
  cn?: string;
  uris: string[];
  dns: string[];
  emails: string[];
}

/**
 * Splits Node's `subjectaltname` ("DNS:a, URI:repr://b, email:c@d, IP
 * Address:1.2.3.4") into entries. Node writes a value that contains a comma
 * or a quote as a JSON string ('URI:"repr://a,b"'), so a plain split on ", "
 * would let a crafted name smuggle in a second entry.
 */
export function parseSubjectAltName(text: string): { kind: string; value: string }[] {
  const out: { kind: string; value: string }[] = [];
  let i = 0;
  while (i < text.length) {
    const colon = text.indexOf(':', i);
    if (colon < 0) break;
    const kind = text.slice(i, colon).trim();
    let j = colon + 1;
    let value: string;
    if (text[j] === '"') {
      // A JSON string: find its closing quote, skipping escaped characters.
      let k = j + 1;
      while (k < text.length && text[k] !== '"') k += text[k] === '\\' ? 2 : 1;
      try {
        value = JSON.parse(text.slice(j, k + 1)) as string;
      } catch {
        return out; // malformed: keep only what parsed cleanly
      }
      j = k + 1;
    } else {
      const end = text.indexOf(', ', j);
      value = text.slice(j, end < 0 ? text.length : end);
      j = end < 0 ? text.length : end;
    }
    out.push({ kind, value });
    // Skip the ", " separator.
    while (j < text.length && (text[j] === ',' || text[j] === ' ')) j++;
    i = j;
  }
  return out;
}

/** The names of a peer certificate as Node's TLS socket reports it (what grpc-js hands an interceptor). */
export function certNames(cert: PeerCertificate): CertNames {
  const subject = cert.subject as unknown as Record<string, string | string[] | undefined> | undefined;
  const cn = subject?.CN;
  const names: CertNames = { uris: [], dns: [], emails: [] };
  if (typeof cn === 'string' && cn !== '') names.cn = cn;
  for (const { kind, value } of parseSubjectAltName(cert.subjectaltname ?? '')) {
    if (kind === 'URI') names.uris.push(value);
    else if (kind === 'DNS') names.dns.push(value);
    else if (kind === 'email') names.emails.push(value);
  }
  return names;
}

/**
 * The principal name a certificate gives under `from`, or undefined if it
 * has no such name. Of several SANs of a kind, the first one names it.
 */
export function principalFromCert(cert: PeerCertificate, from: CertPrincipalSource): string | undefined {
  const n = certNames(cert);
  switch (from) {
    case 'cn':
      return n.cn;
    case 'san-uri':
      return n.uris[0];
    case 'san-dns':
      return n.dns[0];
    case 'san-email':
      return n.emails[0];
  }
}
