import { seededRandom } from '../common/seeded-random.js';
import type { Trace } from './simulator.js';

/**
 * The loads the policies are compared on, sized for a pool of 4-executor
 * workers that may grow to about 20: each peak wants 15 to 60 executors.
 */

/** A CI system: a trickle of builds, and every 6 to 14 minutes a pipeline that fans out 4 actions a second for 90 s. */
export function burstyCi(seed = 16): Trace {
  const durationSeconds = 3600;
  const random = seededRandom(seed);
  const bursts: number[] = [];
  for (let at = 120 + random() * 240; at < durationSeconds - 300; at += 360 + random() * 480) bursts.push(at);
  return {
    name: 'bursty-ci',
    description: 'CI: 0.3 actions/s, and every 6–14 min a 90 s fan-out of 4 actions/s; 10 s actions; 1 h',
    durationSeconds,
    meanActionSeconds: 10,
    seed,
    rate: (t) => (bursts.some((b) => t >= b && t < b + 90) ? 4 : 0.3),
  };
}

/** A working day, 24 h compressed into 2 h: near idle at night, 3 actions a second at midday. */
export function dailyCurve(seed = 16): Trace {
  const durationSeconds = 7200;
  return {
    name: 'daily',
    description: 'a day compressed 12×: 0.1 → 3 → 0.1 actions/s on a cosine; 8 s actions; 2 h',
    durationSeconds,
    meanActionSeconds: 8,
    seed,
    rate: (t) => 0.1 + (2.9 * (1 - Math.cos((2 * Math.PI * t) / durationSeconds))) / 2,
  };
}

/** A quiet pool hit by one burst a minute long, 30 times its usual load: the case a fast scale-up is for. */
export function spike(seed = 16): Trace {
  return {
    name: 'spike',
    description: 'a quiet 0.2 actions/s, then 6 actions/s for 60 s at minute 10; 10 s actions; 30 min',
    durationSeconds: 1800,
    meanActionSeconds: 10,
    seed,
    rate: (t) => (t >= 600 && t < 660 ? 6 : 0.2),
  };
}

/** A square wave faster than the cooldowns: the load that makes a naive autoscaler flap. */
export function oscillating(seed = 16, periodSeconds = 40): Trace {
  return {
    name: 'oscillating',
    description: `a square wave: 3 actions/s for ${periodSeconds / 2} s, then none for ${periodSeconds / 2} s; 5 s actions; 30 min`,
    durationSeconds: 1800,
    meanActionSeconds: 5,
    seed,
    rate: (t) => (t % periodSeconds < periodSeconds / 2 ? 3 : 0),
  };
}

export const TRACES = [burstyCi, dailyCurve, spike, oscillating] as const;
