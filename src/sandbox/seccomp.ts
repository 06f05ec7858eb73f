/**
 * The seccomp filter bubblewrap installs for an action (`bwrap --seccomp FD`):
 * a classic BPF program, assembled here because the usual compiler
 * (libseccomp) has no binding for Node and the program is small.
 *
 * It is a deny list: syscalls that reconfigure the kernel, mounts or
 * namespaces, inspect other processes, or have been a steady source of kernel
 * privilege escalations answer EPERM. A deny list lags behind new kernels
 * (a syscall added later is allowed until it is listed); an allow list would
 * break too many build tools to be the default.
 */

export type SeccompArch = 'x64' | 'arm64';

export interface SeccompOptions {
  /** Let the action use ptrace and its relatives (debuggers, LeakSanitizer). */
  allowPtrace?: boolean;
}

// struct seccomp_data: int nr; u32 arch; u64 ip; u64 args[6].
const OFF_NR = 0;
const OFF_ARCH = 4;
const OFF_ARG0_LO = 16; // both supported arches are little-endian

const BPF_LD_W_ABS = 0x20;
const BPF_JEQ_K = 0x15;
const BPF_JGE_K = 0x35;
const BPF_JSET_K = 0x45;
const BPF_RET_K = 0x06;

const RET_KILL_PROCESS = 0x80000000;
const RET_ERRNO = 0x00050000;
const RET_ALLOW = 0x7fff0000;
const EPERM = 1;
const ENOSYS = 38;

const AUDIT_ARCH: Record<SeccompArch, number> = { x64: 0xc000003e, arm64: 0xc00000b7 };
/** x32 syscalls carry this bit with the x86_64 arch value; a deny list by number would miss them. */
const X32_SYSCALL_BIT = 0x40000000;

/** CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET. */
const CLONE_NS_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000;

type Numbers = Record<string, number>;

// From <asm/unistd_64.h> (x86_64) and <asm-generic/unistd.h> (arm64).
const X64: Numbers = {
  mount: 165,
  umount2: 166,
  pivot_root: 155,
  chroot: 161,
  open_tree: 428,
  move_mount: 429,
  fsopen: 430,
  fsconfig: 431,
  fsmount: 432,
  fspick: 433,
  mount_setattr: 442,
  unshare: 272,
  setns: 308,
  keyctl: 250,
  add_key: 248,
  request_key: 249,
  bpf: 321,
  perf_event_open: 298,
  userfaultfd: 323,
  io_uring_setup: 425,
  io_uring_enter: 426,
  io_uring_register: 427,
  kexec_load: 246,
  kexec_file_load: 320,
  init_module: 175,
  finit_module: 313,
  delete_module: 176,
  reboot: 169,
  swapon: 167,
  swapoff: 168,
  syslog: 103,
  open_by_handle_at: 304,
  clone: 56,
  clone3: 435,
};
const ARM64: Numbers = {
  mount: 40,
  umount2: 39,
  pivot_root: 41,
  chroot: 51,
  open_tree: 428,
  move_mount: 429,
  fsopen: 430,
  fsconfig: 431,
  fsmount: 432,
  fspick: 433,
  mount_setattr: 442,
  unshare: 97,
  setns: 268,
  keyctl: 219,
  add_key: 217,
  request_key: 218,
  bpf: 280,
  perf_event_open: 241,
  userfaultfd: 282,
  io_uring_setup: 425,
  io_uring_enter: 426,
  io_uring_register: 427,
  kexec_load: 104,
  kexec_file_load: 294,
  init_module: 105,
  finit_module: 273,
  delete_module: 106,
  reboot: 142,
  swapon: 224,
  swapoff: 225,
  syslog: 116,
  open_by_handle_at: 265,
  clone: 220,
  clone3: 435,
};
const PTRACE: Record<SeccompArch, Numbers> = {
  x64: { ptrace: 101, process_vm_readv: 310, process_vm_writev: 311, pidfd_getfd: 438 },
  arm64: { ptrace: 117, process_vm_readv: 270, process_vm_writev: 271, pidfd_getfd: 438 },
};

function deniedSyscalls(opts: SeccompOptions = {}): string[] {
  const names = Object.keys(X64).filter((n) => n !== 'clone' && n !== 'clone3');
  return opts.allowPtrace ? names : [...names, ...Object.keys(PTRACE.x64)];
}

export function isSeccompArch(arch: string): arch is SeccompArch {
  return arch === 'x64' || arch === 'arm64';
}

/**
 * The filter as bwrap reads it: `struct sock_filter` entries (u16 code, u8 jt,
 * u8 jf, u32 k) in host byte order.
 *
 * A syscall of another ABI (i386 or arm32 compat, x32) kills the process:
 * syscall numbers differ there, so the deny list would not hold. clone3 gets
 * ENOSYS because its flags sit in memory a filter cannot read; the C library
 * then falls back to clone, whose namespace flags are refused.
 */
export function seccompProgram(arch: SeccompArch, opts: SeccompOptions = {}): Buffer {
  const nr = arch === 'x64' ? X64 : ARM64;
  const denied = deniedSyscalls(opts).map((n) => nr[n] ?? PTRACE[arch][n]!);

  type Insn = { code: number; k: number; jt?: Label; jf?: Label };
  type Label = 'allow' | 'eperm' | 'enosys' | 'kill' | 'next';
  const body: Insn[] = [];
  body.push({ code: BPF_LD_W_ABS, k: OFF_ARCH });
  body.push({ code: BPF_JEQ_K, k: AUDIT_ARCH[arch], jf: 'kill' });
  body.push({ code: BPF_LD_W_ABS, k: OFF_NR });
  if (arch === 'x64') body.push({ code: BPF_JGE_K, k: X32_SYSCALL_BIT, jt: 'kill' });
  for (const n of denied) body.push({ code: BPF_JEQ_K, k: n, jt: 'eperm' });
  body.push({ code: BPF_JEQ_K, k: nr.clone3!, jt: 'enosys' });
  body.push({ code: BPF_JEQ_K, k: nr.clone!, jf: 'allow' });
  body.push({ code: BPF_LD_W_ABS, k: OFF_ARG0_LO });
  body.push({ code: BPF_JSET_K, k: CLONE_NS_FLAGS, jt: 'eperm', jf: 'allow' });

  const tail: [Label, number][] = [
    ['allow', RET_ALLOW],
    ['eperm', RET_ERRNO | EPERM],
    ['enosys', RET_ERRNO | ENOSYS],
    ['kill', RET_KILL_PROCESS],
  ];
  const at = new Map(tail.map(([l], i) => [l, body.length + i]));
  const buf = Buffer.alloc((body.length + tail.length) * 8);
  const jump = (pc: number, l: Label | undefined) => {
    if (l === undefined || l === 'next') return 0;
    const off = at.get(l)! - pc - 1;
    if (off > 255) throw new Error('seccomp filter too long for a short jump');
    return off;
  };
  body.forEach((insn, pc) => {
    buf.writeUInt16LE(insn.code, pc * 8);
    buf.writeUInt8(jump(pc, insn.jt), pc * 8 + 2);
    buf.writeUInt8(jump(pc, insn.jf), pc * 8 + 3);
    buf.writeUInt32LE(insn.k >>> 0, pc * 8 + 4);
  });
  tail.forEach(([, k], i) => {
    const pc = body.length + i;
    buf.writeUInt16LE(BPF_RET_K, pc * 8);
    buf.writeUInt32LE(k >>> 0, pc * 8 + 4);
  });
  return buf;
}
