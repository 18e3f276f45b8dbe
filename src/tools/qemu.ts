// qemu-system-x86_64: a headless VM booted straight from a kernel and initrd,
// with its root a virtio disk (/dev/vda), the other disks SCSI disks at fixed
// LUNs of one virtio-scsi controller (the guest finds LUN N at
// /sys/bus/scsi/devices/*:0:0:N), and serial ports written to host files.
import { run, type RunResult } from '../exec.js';

export type Accel = 'kvm' | 'tcg';

export interface QemuDisk {
  /** Host file. */
  path: string;
  /** The disk's serial (at most 20 characters of [A-Za-z0-9_-]). */
  serial: string;
  /** A SCSI disk at this LUN of the virtio-scsi controller (QemuSpec.scsi), instead of a virtio-blk disk. */
  lun?: number;
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
  /** A saved VM state to load instead of booting; the machine must match the one saved. runQemu gives qemu the file as its stdin (-incoming fd:0): read straight from the file, not through a pipe. */
  incomingState?: string;
  /** Start with the CPU stopped (-S): QMP `cont` runs it. */
  paused?: boolean;
  /** Add the virtio-scsi controller (SCSI_BUS) that disks with a `lun`, plugged in from the start or hot-plugged, sit on. */
  scsi?: boolean;
}

/** The bus of the virtio-scsi controller: SCSI disks are added to it, at boot or by hot-plug. */
export const SCSI_BUS = 'scsi0.0';
/** LUNs a virtio-scsi target takes. */
export const MAX_LUN = 255;

export function checkSerial(serial: string): void {
  if (!/^[A-Za-z0-9_-]+$/.test(serial) || serial.length > MAX_SERIAL) {
    throw new Error(`qemu disk serial must be 1-${MAX_SERIAL} characters of [A-Za-z0-9_-]: ${serial}`);
  }
}

export function checkLun(lun: number): void {
  if (!Number.isInteger(lun) || lun < 0 || lun > MAX_LUN) throw new Error(`a SCSI LUN is a whole number 0-${MAX_LUN}, not ${lun}`);
}

/** The -device value (or device_add arguments) of a SCSI disk at `lun`, target 0. Pure. */
export function scsiDiskDevice(drive: string, lun: number, serial: string): Record<string, string | number> {
  checkLun(lun);
  checkSerial(serial);
  return { driver: 'scsi-hd', bus: SCSI_BUS, 'scsi-id': 0, lun, drive, serial };
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
  if (spec.scsi) args.push('-device', `virtio-scsi-pci,id=${SCSI_BUS.split('.')[0]}`);
  const luns = new Set<number>();
  spec.disks.forEach((d, i) => {
    checkSerial(d.serial);
    const drive = [`file=${qemuEscape(d.path)}`, `format=${d.format ?? 'raw'}`, 'if=none', `id=disk${i}`, 'cache=unsafe'];
    if (d.readOnly) drive.push('readonly=on');
    if (d.snapshot) drive.push('snapshot=on');
    args.push('-drive', drive.join(','));
    if (d.lun === undefined) {
      args.push('-device', `virtio-blk-pci,drive=disk${i},serial=${d.serial}`);
      return;
    }
    if (!spec.scsi) throw new Error(`disk ${d.serial} has a LUN but the VM has no SCSI controller (QemuSpec.scsi)`);
    if (luns.has(d.lun)) throw new Error(`two disks at SCSI LUN ${d.lun}`);
    luns.add(d.lun);
    const { driver, ...props } = scsiDiskDevice(`disk${i}`, d.lun, d.serial);
    args.push('-device', [driver, ...Object.entries(props).map(([k, v]) => `${k}=${v}`)].join(','));
  });
  spec.serialFiles.forEach((f, i) => {
    args.push('-chardev', `file,id=serial${i},path=${qemuEscape(f)}`);
    args.push('-serial', `chardev:serial${i}`);
  });
  if (spec.debugExit) args.push('-device', 'isa-debug-exit,iobase=0xf4,iosize=0x04');
  if (spec.qmpSocket) args.push('-qmp', `unix:${qemuEscape(spec.qmpSocket)},server=on,wait=off`);
  if (spec.incomingState) args.push('-incoming', 'fd:0');
  if (spec.paused) args.push('-S');
  return args;
}

/** Any exit status is the caller's to judge (a guest poweroff and a panic both end qemu with 0). */

/**
 * Run qemu until the guest powers off or `timeoutMs` passes (then SIGTERM,
 * SIGKILL 5 s later), or `kill` is aborted (SIGKILL at once). `tmpDir`
 * receives the overlays of snapshot=on disks (qemu's default is /var/tmp,
 * where a killed qemu would leave them).
 */
export async function runQemu(spec: QemuSpec, timeoutMs: number, tmpDir?: string, kill?: AbortSignal): Promise<RunResult> {
  const env: Record<string, string> = tmpDir ? { TMPDIR: tmpDir } : {};
  const opts = { okCodes: 'any' as const, timeoutMs, allowTimeout: true, env, kill };
  if (!spec.incomingState) return run('qemu-system-x86_64', buildQemuArgs(spec), opts);
  // The saved state as qemu's stdin itself (a fixed script; the path is data): read straight
  // from the file, 2-5 times faster than through a pipe from `cat` on this machine type.
  return run('sh', ['-c', 'exec qemu-system-x86_64 "$@" < "$PI_QEMU_STATE"', 'qemu-system-x86_64', ...buildQemuArgs(spec)], {
    ...opts,
    env: { ...env, PI_QEMU_STATE: spec.incomingState },
  });
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
