// qemu-system-x86_64: a headless VM booted straight from a kernel and initrd,
// with virtio disks named by serial (the guest finds them under
// /dev/disk/by-id/virtio-SERIAL) and serial ports written to host files.
import { run, shellQuote, type RunResult } from '../exec.js';

export type Accel = 'kvm' | 'tcg';

export interface QemuDisk {
  /** Host file. */
  path: string;
  /** virtio-blk serial (at most 20 characters); the guest sees /dev/disk/by-id/virtio-SERIAL. */
  serial: string;
  format?: 'raw' | 'qcow2';
  /** The guest cannot write it. */
  readOnly?: boolean;
  /** Guest writes go to a throw-away overlay; the file is never changed. */
  snapshot?: boolean;
}

export interface QemuSpec {
  accel: Accel;
  /** Default: "host" under KVM, "max" under TCG. */
  cpu?: string;
  memoryMb: number;
  cpus: number;
  kernel: string;
  initrd?: string;
  /** Kernel command line, one argument per item. */
  append: readonly string[];
  /** In this order: the first is /dev/vda. */
  disks: readonly QemuDisk[];
  /** Host files that receive the guest's serial ports: [ttyS0, ttyS1, ...]. */
  serialFiles: readonly string[];
  /** qemu writes its pid here, so that a leftover process can be found and killed. */
  pidFile?: string;
  /** Add isa-debug-exit on port 0xf4: a guest write of v there ends qemu with exit code 2v+1. */
  debugExit?: boolean;
  /** Raw disk image booted by the BIOS instead of a kernel (used by the KVM probe). */
  bootSector?: string;
  /** A unix socket where qemu serves QMP (the machine protocol: stop, migrate, hot-plug, quit). */
  qmpSocket?: string;
  /** A saved VM state to load instead of booting (-incoming "exec:cat FILE"); the machine must match the one saved. */
  incomingState?: string;
  /** Start with the CPU stopped (-S): QMP `cont` runs it. */
  paused?: boolean;
}

/** The machine type every part-image VM uses (qemu's default, named so that it is part of a saved state's key). */
export const MACHINE = 'pc';

export const MAX_SERIAL = 20;

/** qemu option values separate on ","; a literal comma is written twice. */
export function qemuEscape(value: string): string {
  return value.replace(/,/g, ',,');
}

/** The argv after `qemu-system-x86_64`. Pure. */
export function buildQemuArgs(spec: QemuSpec): string[] {
  const cpu = spec.cpu ?? (spec.accel === 'kvm' ? 'host' : 'max');
  const args = [
    '-nodefaults',
    '-no-user-config',
    '-display', 'none',
    '-no-reboot',
    '-machine', MACHINE,
    '-accel', spec.accel,
    '-cpu', cpu,
    '-m', String(spec.memoryMb),
    '-smp', String(spec.cpus),
    '-nic', 'none',
  ];
  if (spec.pidFile) args.push('-pidfile', spec.pidFile);
  if (spec.bootSector) {
    // IDE cannot be read-only; snapshot=on keeps the file unchanged all the same.
    args.push('-drive', `file=${qemuEscape(spec.bootSector)},format=raw,if=ide,snapshot=on`);
  } else {
    args.push('-kernel', spec.kernel);
    if (spec.initrd) args.push('-initrd', spec.initrd);
    args.push('-append', spec.append.join(' '));
    args.push('-device', 'virtio-rng-pci');
  }
  spec.disks.forEach((d, i) => {
    if (!/^[A-Za-z0-9_-]+$/.test(d.serial) || d.serial.length > MAX_SERIAL) {
      throw new Error(`qemu disk serial must be 1-${MAX_SERIAL} characters of [A-Za-z0-9_-]: ${d.serial}`);
    }
    const drive = [`file=${qemuEscape(d.path)}`, `format=${d.format ?? 'raw'}`, 'if=none', `id=disk${i}`, 'cache=unsafe'];
    if (d.readOnly) drive.push('readonly=on');
    if (d.snapshot) drive.push('snapshot=on');
    args.push('-drive', drive.join(','));
    args.push('-device', `virtio-blk-pci,drive=disk${i},serial=${d.serial}`);
  });
  spec.serialFiles.forEach((f, i) => {
    args.push('-chardev', `file,id=serial${i},path=${qemuEscape(f)}`);
    args.push('-serial', `chardev:serial${i}`);
  });
  if (spec.debugExit) args.push('-device', 'isa-debug-exit,iobase=0xf4,iosize=0x04');
  if (spec.qmpSocket) args.push('-qmp', `unix:${qemuEscape(spec.qmpSocket)},server=on,wait=off`);
  // qemu runs the command with /bin/sh: the path is quoted for it.
  if (spec.incomingState) args.push('-incoming', `exec:cat ${shellQuote(spec.incomingState)}`);
  if (spec.paused) args.push('-S');
  return args;
}

/** Any exit status is the caller's to judge (a guest poweroff and a panic both end qemu with 0). */

/**
 * Run qemu until the guest powers off or `timeoutMs` passes (then SIGTERM,
 * SIGKILL 5 s later). `tmpDir` receives the overlays of snapshot=on disks
 * (qemu's default is /var/tmp, where a killed qemu would leave them).
 */
export async function runQemu(spec: QemuSpec, timeoutMs: number, tmpDir?: string): Promise<RunResult> {
  return run('qemu-system-x86_64', buildQemuArgs(spec), { okCodes: 'any', timeoutMs, allowTimeout: true, env: tmpDir ? { TMPDIR: tmpDir } : undefined });
}

let versionMemo: Promise<string | undefined> | undefined;

/** "7.2.22", or undefined when qemu is missing. Asked once per process. */
export function qemuVersion(): Promise<string | undefined> {
  versionMemo ??= run('qemu-system-x86_64', ['--version'], { timeoutMs: 10_000 }).then(
    (r) => /version (\S+)/.exec(r.stdout)?.[1],
    () => undefined,
  );
  return versionMemo;
}
