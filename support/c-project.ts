import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** What writeCProject wrote, relative to its directory. */
export interface CProject {
  dir: string;
  /** Every C source, main included, in build order. */
  sources: string[];
  /** The object each source compiles to (`build/<path>.o`); its `-MMD` file is the same with `.d`. */
  objects: string[];
  /** The linked program. */
  program: string;
  /** What the program prints: proof that every object was linked, in order. */
  expectedOutput: string;
}

export interface CProjectOptions {
  /** Sources besides main.c; at least 40 by default, spread over nested directories. */
  parts?: number;
}

/** Where the parts live: nested a few levels, as real projects' modules are. */
const GROUPS = ['core', 'util', 'net', 'net/proto', 'store/index'];

const MASK = (1n << 64n) - 1n;

/**
 * Writes a C project: `parts` sources under src/<group>/ (nested
 * directories), each including shared headers from include/ and its group's
 * own header, each defining one step of a chain that main.c runs; a
 * Makefile compiles each with `-MMD -MP` into build/ and links build/app,
 * which prints how many parts it linked and a checksum only the whole chain
 * in order gives. The same options always write the same bytes.
 *
 * The build is reproducible with Debian's gcc: no __DATE__ or __TIME__, and
 * `-ffile-prefix-map` turns the absolute directory (in the debug info) into
 * `.`, so two checkouts in different places build byte-identical objects and
 * programs. `make CC="wrapper gcc"` replaces the compiler of compiles and link
 * alike (a command-line variable overrides the Makefile's).
 */
export function writeCProject(dir: string, o: CProjectOptions = {}): CProject {
  const parts = o.parts ?? 48;
  const file = (rel: string, text: string) => {
    mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    writeFileSync(path.join(dir, rel), text);
  };

  file(
    'include/chain.h',
    [
      '#ifndef CHAIN_H',
      '#define CHAIN_H',
      '#include <stdint.h>',
      '#include "config.h"',
      '/* One step of the chain: every part mixes the value with its own constants. */',
      'static inline uint64_t chain_mix(uint64_t x, uint64_t mul, uint64_t add) {',
      '  x ^= x >> CHAIN_SHIFT;',
      '  return x * mul + add;',
      '}',
      '#endif',
      '',
    ].join('\n'),
  );
  file('include/config.h', ['#ifndef CONFIG_H', '#define CONFIG_H', '#define CHAIN_SHIFT 29', '#define CHAIN_ROUNDS 3', '#endif', ''].join('\n'));
  file(
    'include/util/table.h',
    [
      '#ifndef UTIL_TABLE_H',
      '#define UTIL_TABLE_H',
      '#include <stddef.h>',
      '#include <stdint.h>',
      '/* Sums a table the way every part does, so each has a loop worth compiling. */',
      'static inline uint64_t table_fold(const uint64_t *t, size_t n, uint64_t x) {',
      '  for (size_t i = 0; i < n; i++) x = (x ^ t[i]) * 0x100000001b3ULL;',
      '  return x;',
      '}',
      '#endif',
      '',
    ].join('\n'),
  );

  const sources: string[] = [];
  const decls: string[] = [];
  let expected = 1n;
  for (let i = 0; i < parts; i++) {
    const group = GROUPS[i % GROUPS.length]!;
    const guard = `${group.replace(/\//g, '_').toUpperCase()}_LOCAL_H`;
    const rel = `src/${group}/part${String(i).padStart(3, '0')}.c`;
    const mul = 2n * BigInt(i) + 0x9e3779b97f4a7c15n;
    const add = BigInt(i) * 7919n + 1n;
    const table = Array.from({ length: 8 }, (_, k) => (BigInt(i * 8 + k + 1) * 0x2545f4914f6cdd1dn) & MASK);
    file(`src/${group}/local.h`, [`#ifndef ${guard}`, `#define ${guard}`, `#define GROUP_NAME "${group}"`, '#include "chain.h"', '#endif', ''].join('\n'));
    file(
      rel,
      [
        '#include <string.h>',
        '#include "local.h"',
        '#include "util/table.h"',
        '',
        `static const uint64_t table[] = {${table.map((t) => `0x${t.toString(16)}ULL`).join(', ')}};`,
        '',
        `uint64_t part${i}(uint64_t x) {`,
        '  for (int r = 0; r < CHAIN_ROUNDS; r++)',
        `    x = chain_mix(x, 0x${(mul & MASK).toString(16)}ULL, ${add}ULL);`,
        '  x = table_fold(table, sizeof table / sizeof table[0], x);',
        '  return x + strlen(GROUP_NAME);',
        '}',
        '',
      ].join('\n'),
    );
    sources.push(rel);
    decls.push(`uint64_t part${i}(uint64_t);`);
    for (let r = 0; r < 3; r++) expected = mix(expected, mul & MASK, add);
    expected = fold(table, expected);
    expected = (expected + BigInt(group.length)) & MASK;
  }
  file('include/parts.h', ['#ifndef PARTS_H', '#define PARTS_H', '#include <stdint.h>', ...decls, '#endif', ''].join('\n'));
  const calls = Array.from({ length: parts }, (_, i) => `  x = part${i}(x);`);
  file(
    'src/main.c',
    [
      '#include <inttypes.h>',
      '#include <stdio.h>',
      '#include "parts.h"',
      '',
      'int main(void) {',
      '  uint64_t x = 1;',
      ...calls,
      `  printf("linked %d parts, checksum %016" PRIx64 "\\n", ${parts}, x);`,
      '  return 0;',
      '}',
      '',
    ].join('\n'),
  );
  sources.push('src/main.c');
  const objects = sources.map((s) => s.replace(/^src\//, 'build/').replace(/\.c$/, '.o'));
  file(
    'Makefile',
    [
      '# Generated; see support/c-project.ts.',
      'CC = gcc',
      '# The prefix map keeps the checkout directory out of the objects: two checkouts build the same bytes.',
      'CFLAGS = -O2 -g -Wall -Werror -Iinclude -ffile-prefix-map=$(CURDIR)=.',
      `SRCS = ${sources.join(' \\\n  ')}`,
      'OBJS = $(SRCS:src/%.c=build/%.o)',
      '',
      'build/app: $(OBJS)',
      '\t$(CC) -o $@ $(OBJS)',
      '',
      'build/%.o: src/%.c',
      '\t@mkdir -p $(@D)',
      '\t$(CC) $(CFLAGS) -MMD -MP -c $< -o $@',
      '',
      'clean:',
      '\trm -rf build',
      '',
      '.PHONY: clean',
      '-include $(OBJS:.o=.d)',
      '',
    ].join('\n'),
  );
  return {
    dir,
    sources,
    objects,
    program: 'build/app',
    expectedOutput: `linked ${parts} parts, checksum ${expected.toString(16).padStart(16, '0')}\n`,
  };
}

function mix(x: bigint, mul: bigint, add: bigint): bigint {
  const y = x ^ (x >> 29n);
  return (y * mul + add) & MASK;
}

function fold(table: readonly bigint[], x: bigint): bigint {
  let y = x;
  for (const t of table) y = ((y ^ t) * 0x100000001b3n) & MASK;
  return y;
}
