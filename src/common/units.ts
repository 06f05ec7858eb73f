/**
 * The one parser for sizes, in config, flags and platform properties:
 * "1048576" (bytes), "512MiB" / "512Mi" (binary), "512MB" (decimal), and
 * the bare letters of Docker and Kubernetes memory limits, "2g" / "512m",
 * which are binary as they are there.
 */
export function parseByteSize(s: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*$/i.exec(s);
  if (!m) return undefined;
  const [, num, prefix = '', binary, bytes] = m;
  const pow = ' kmgt'.indexOf(prefix.toLowerCase() || ' ');
  if (!prefix) return binary ? undefined : Math.round(Number(num));
  const decimal = !binary && bytes !== '';
  return Math.round(Number(num) * (decimal ? 1000 : 1024) ** pow);
}
