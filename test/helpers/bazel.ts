// The Bazel harness is shared with the benchmarks; it lives in support/.
export * from '../../support/bazel.js';
