import { z } from 'zod';

// Apart from the sinks, so that reading a config does not load prom-client.
export const telemetrySinkSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('log') }).strict(),
  z.object({ type: z.literal('jsonl'), path: z.string().min(1) }).strict(),
  // Metrics go to the server's registry, served by `metricsListen`.
  z.object({ type: z.literal('prometheus') }).strict(),
]);

export type TelemetrySinkConfig = z.output<typeof telemetrySinkSchema>;
