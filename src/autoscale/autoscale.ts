/**
 * The contracts of the autoscaler: what it reads of one pool of workers, what
 * it decides, and what a provider does to carry a decision out. The decision
 * (policy.ts) is a pure function of these, so the controller in a server,
 * the simulator and the tests run the very same code.
 */

/** A pool is the workers that offer one set of platform properties, e.g. `OSFamily=linux,pool=big`; '' is the default pool. */
export type PoolKey = string;

/** One look at a pool, taken by the controller every tick (or by the simulator from a trace). */
export interface PoolSample {
  /** Milliseconds since the epoch, from the injected clock. */
  at: number;
  /** Actions (and `repr run`s) waiting for an executor of this pool. */
  queued: number;
  /** Executors of the pool executing or held. */
  busy: number;
  /** Executors of the pool in total (busy + idle). */
  executors: number;
  /** Workers in the pool, draining ones excluded. */
  workers: number;
  /** Actions that arrived for this pool per second since the previous sample. */
  arrivalRate: number;
  /** Actions of this pool finished per second since the previous sample. */
  completionRate: number;
  /** Mean execution time of the pool's recently finished actions, seconds; 0 if none finished yet. */
  meanActionSeconds: number;
}

/** The seed's parameters; every one configurable per pool. */
export interface PolicyConfig {
  minWorkers: number;
  maxWorkers: number;
  /** Executors one worker of the pool brings (to turn executor demand into workers). */
  executorsPerWorker: number;
  /** Exponential smoothing weight of the newest load sample, St = α·Xt + (1−α)·St−1. */
  alpha: number;
  /** Samples the linear-regression trend is fitted over. */
  trendWindow: number;
  /** How far ahead (seconds) the trend is projected when predicting load. */
  horizonSeconds: number;
  /** Utilization (predicted busy / capacity) above which the pool grows. */
  scaleUpThreshold: number;
  /** Utilization below which the pool shrinks. */
  scaleDownThreshold: number;
  /** Utilization the pool is sized for when it changes. */
  targetUtilization: number;
  scaleUpCooldownSeconds: number;
  scaleDownCooldownSeconds: number;
  /**
   * Workers removed at most per scale-down (conservative); scale-up may jump
   * straight to the need (aggressive). The predictive mode removes up to
   * twice this while its forecast is under a quarter of scaleDownThreshold
   * (policy.ts says why).
   */
  maxScaleDownStep: number;
  /**
   * 'predictive': smoothing, trend and Little's law; 'reactive': thresholds on
   * the current utilization only; 'static': always minWorkers. The last two
   * exist so the simulator can compare policies on the same code path.
   */
  mode: 'predictive' | 'reactive' | 'static';
}

/** What a policy remembers between ticks. Plain data, so it can be logged and tested. */
export interface PolicyState {
  /** The smoothed load S(t-1), undefined before the first sample. */
  smoothed?: number;
  /** The last trendWindow samples' load (for the trend) and arrival rate (for Little's law). */
  history: { at: number; load: number; arrivalRate: number }[];
  lastScaleUpAt?: number;
  lastScaleDownAt?: number;
}

export interface Decision {
  /** Workers the pool should have, within [minWorkers, maxWorkers]. */
  desired: number;
  /** Workers it has now (the sample's). */
  current: number;
  direction: 'up' | 'down' | 'hold';
  /** One line a person reads in a log or `repr status`: the rule that decided and its numbers. */
  reason: string;
  /** The numbers the decision was made from, for logs and metrics. */
  inputs: {
    load: number;
    smoothed: number;
    /** Load change per second from the regression. */
    trend: number;
    predicted: number;
    /** Actions per second over the trend window: the λ of Little's law. */
    arrivalRate: number;
    /** Whether the newest sample's arrivals are a burst beyond the window's Poisson noise. */
    burst: boolean;
    /** Little's law: executors needed = arrival rate × mean action time (plus the queue to drain). */
    littleExecutors: number;
    /** Executors a scale-up is sized for: the load now, or Little's law at the burst's rate if there is one. */
    sizedFor: number;
    /** Demand over capacity, the scale-up check's: the higher of the forecast and Little's law (reactive: the load now). */
    utilization: number;
    /** The forecast over capacity, the scale-down check's (reactive: the same as utilization). */
    forecastUtilization: number;
  };
  state: PolicyState;
}

/** A worker as the provider knows it: a name the scheduler also sees (`repr worker --name`). */
export interface ProvidedWorker {
  name: string;
  pool: PoolKey;
}

/**
 * Where workers come from: processes on this machine, a Kubernetes
 * StatefulSet, or user commands for any cloud. The controller picks which
 * workers go (idle ones) and drains them before it calls remove().
 */
export interface WorkerProvider {
  readonly kind: 'process' | 'kubernetes' | 'command';
  /** Workers this provider started and that have not been removed. */
  list(pool: PoolKey): Promise<ProvidedWorker[]>;
  /** Starts `count` more workers for `pool`; resolves when they were asked for (not when they registered). */
  add(pool: PoolKey, count: number): Promise<ProvidedWorker[]>;
  /**
   * Stops the named workers. Called only after the scheduler drained them
   * (they run nothing); a provider whose workers drain on SIGTERM may signal
   * and wait.
   */
  remove(pool: PoolKey, names: readonly string[]): Promise<void>;
  /**
   * Of `candidates` (idle workers the controller would like to remove), the
   * ones this provider can remove now. A Kubernetes StatefulSet only shrinks
   * from its highest ordinal, so the controller should drain only what this
   * returns; a provider without it can remove any worker.
   */
  removable?(pool: PoolKey, candidates: readonly string[]): Promise<string[]>;
  close(): Promise<void>;
}
