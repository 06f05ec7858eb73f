import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { seccompProgram, type SeccompArch } from '../../../src/sandbox/seccomp.js';

const ALLOW = 0x7fff0000;
const EPERM = 0x00050001;
const ENOSYS = 0x00050026;
const KILL = 0x80000000;

/** Runs a classic BPF program over a seccomp_data, as the kernel would, for the instructions the filter uses. */
function evaluate(prog: Buffer, nr: number, arch: number, arg0 = 0): number {
  const data = Buffer.alloc(64);
  data.writeInt32LE(nr, 0);
  data.writeUInt32LE(arch, 4);
  data.writeUInt32LE(arg0 >>> 0, 16);
  let acc = 0;
  for (let pc = 0; pc < prog.length / 8; ) {
    const code = prog.readUInt16LE(pc * 8);
    const jt = prog.readUInt8(pc * 8 + 2);
    const jf = prog.readUInt8(pc * 8 + 3);
    const k = prog.readUInt32LE(pc * 8 + 4);
    const jump = (cond: boolean) => (pc += 1 + (cond ? jt : jf));
    if (code === 0x20) (acc = data.readUInt32LE(k)), pc++;
    else if (code === 0x15) jump(acc === k);
    else if (code === 0x35) jump(acc >= k);
    else if (code === 0x45) jump((acc & k) !== 0);
    else if (code === 0x06) return k;
    else throw new Error(`unexpected opcode ${code} at ${pc}`);
  }
  throw new Error('ran off the end');
}

// Numbers from each ABI's table, independently of the filter's own.
const cases: Record<SeccompArch, { arch: number; foreign: number; allowed: number[]; denied: number[]; clone: number; ptrace: number }> = {
  x64: {
    arch: 0xc000003e,
    foreign: 0x40000003 /* i386 */,
    allowed: [0, 1, 39, 57, 59, 231],
    denied: [165, 166, 272, 308, 250, 321, 298, 425, 175],
    clone: 56,
    ptrace: 101,
  },
  arm64: {
    arch: 0xc00000b7,
    foreign: 0x40000028 /* arm */,
    allowed: [63, 64, 172, 221, 93],
    denied: [40, 39, 97, 268, 219, 280, 241, 425, 105],
    clone: 220,
    ptrace: 117,
  },
};

describe('seccomp filter program', () => {
  for (const [arch, c] of Object.entries(cases) as [SeccompArch, (typeof cases)['x64']][]) {
    it(`${arch}: allows ordinary syscalls, refuses the listed ones, kills another ABI`, () => {
      const prog = seccompProgram(arch);
      for (const nr of c.allowed) assert.equal(evaluate(prog, nr, c.arch), ALLOW, `syscall ${nr}`);
      for (const nr of c.denied) assert.equal(evaluate(prog, nr, c.arch), EPERM, `syscall ${nr}`);
      assert.equal(evaluate(prog, c.ptrace, c.arch), EPERM);
      assert.equal(evaluate(seccompProgram(arch, { allowPtrace: true }), c.ptrace, c.arch), ALLOW);
      assert.equal(evaluate(prog, 435, c.arch), ENOSYS, 'clone3');
      assert.equal(evaluate(prog, c.clone, c.arch, 0x11 /* SIGCHLD: fork */), ALLOW);
      assert.equal(evaluate(prog, c.clone, c.arch, 0x3d0f00 /* pthread_create's flags */), ALLOW);
      assert.equal(evaluate(prog, c.clone, c.arch, 0x10000000 | 0x11 /* CLONE_NEWUSER */), EPERM);
      assert.equal(evaluate(prog, c.clone, c.arch, 0x20000 | 0x11 /* CLONE_NEWNS */), EPERM);
      assert.equal(evaluate(prog, 0, c.foreign), KILL);
      if (arch === 'x64') assert.equal(evaluate(prog, 0x40000000 + 39, c.arch), KILL, 'x32');
    });
  }
});
