import type { ServerProcess } from './spawn-server.js';

/** Where a server process started with --metrics-listen serves /metrics, from its log. */
export function metricsAddress(server: Pick<ServerProcess, 'logs'>): string {
  for (const line of server.logs.flatMap((l) => l.split('\n'))) {
    try {
      const rec = JSON.parse(line) as { msg?: string; address?: string };
      if (rec.msg === 'metrics endpoint listening' && rec.address) return rec.address;
    } catch {
      /* not a log line */
    }
  }
  throw new Error('the server logged no metrics endpoint (started without --metrics-listen?)');
}

/** The Prometheus text a server process serves at /metrics. */
export async function scrapeMetrics(server: Pick<ServerProcess, 'logs'>): Promise<string> {
  const res = await fetch(`http://${metricsAddress(server)}/metrics`);
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
  return res.text();
}

/** The value of one series (`name{labels}` exactly as exposed, or a bare name), NaN if absent. */
export function metricValue(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : Number.NaN;
}
