/**
 * Whether a host name or address only ever means this machine: localhost,
 * 127.0.0.0/8 or ::1, with or without the brackets of a URL or host:port.
 */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\./.test(h);
}
