// Does KVM really run guests here? /dev/kvm existing and opening is not
// enough: on some nested hosts (this project's CI among them) `-cpu host`
// aborts at once ("failed to set MSR 0x10a") and every other CPU model gets
// through the BIOS but hangs the Linux kernel with no output at all.
//
// So the verdict comes from guests, in two steps:
// 1. a 512-byte boot sector under `-accel kvm -cpu host` that writes "OK" to
//    the serial port and exits through isa-debug-exit (~0.1 s when it works;
//    catches the immediate abort);
// 2. the VM's own kernel under the same flags, without a root, which must
//    get to its "VFS: Unable to mount root" panic (1-2 s under KVM; catches
//    the hang, after at most KERNEL_PROBE_MS).
// The verdict is kept in memory and in the cache directory, keyed by the host
// kernel, the qemu version, the CPU model and the guest kernel, so that the
// probe runs once per machine. PART_IMAGE_ACCEL=kvm|tcg overrides it.
import { constants } from 'node:fs';
import { access, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { release } from 'node:os';
import { join } from 'node:path';
import { withScope } from '../cleanup.js';
import { log } from '../log.js';
import { qemuVersion, runQemu, type Accel } from '../tools/qemu.js';
import { vmCacheRoot } from './cache.js';

export interface AccelVerdict {
  accel: Accel;
  /** Why this accelerator: the probe that decided, or the override. */
  reason: string;
  /** True when a real kernel booted under KVM (or when TCG was chosen: nothing to confirm). */
  confirmed: boolean;
}

export const BOOT_SECTOR_PROBE_MS = 5_000;
export const KERNEL_PROBE_MS = 20_000;
/** What the boot sector prints and the exit code isa-debug-exit turns its 0x10 into. */
const PROBE_TEXT = 'OK';
const PROBE_EXIT = 33;

/** Real-mode code: print "OK\n" on COM1, write 0x10 to port 0xf4 (qemu exits 33), halt. */
export function bootSector(): Buffer {
  const code = [
    0xb0, 0x4f, // mov al, 'O'
    0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0xee, // out dx, al
    0xb0, 0x4b, // mov al, 'K'
    0xee,
    0xb0, 0x0a, // mov al, '\n'
    0xee,
    0xb0, 0x10, // mov al, 0x10
    0xe6, 0xf4, // out 0xf4, al
    0xf4, // hlt
    0xeb, 0xfd, // jmp hlt
  ];
  const sector = Buffer.alloc(512);
  Buffer.from(code).copy(sector);
  sector[510] = 0x55;
  sector[511] = 0xaa;
  return sector;
}

let memo: Map<string, AccelVerdict> = new Map();
let loggedFallback = false;

/** Forget the in-memory verdict (tests). The on-disk one stays. */
export function resetAccelMemo(): void {
  memo = new Map();
  loggedFallback = false;
}

function fallback(reason: string, confirmed = true): AccelVerdict {
  const v: AccelVerdict = { accel: 'tcg', reason, confirmed };
  if (!loggedFallback) {
    loggedFallback = true;
    log.info(`VM: ${reason}; using TCG software emulation (slower: about 5 s for a portable check in a restored VM and 30 s for a cold boot on an idle 2-core machine)`);
  }
  return v;
}

async function cpuModel(): Promise<string> {
  const info = await readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  return /^model name\s*:\s*(.*)$/m.exec(info)?.[1] ?? 'unknown';
}

async function verdictFile(kernel: string | undefined): Promise<string> {
  const key = createHash('sha256')
    .update(JSON.stringify([release(), await qemuVersion(), await cpuModel(), kernel ?? '']))
    .digest('hex')
    .slice(0, 16);
  return join(vmCacheRoot(), `accel-${key}.json`);
}

async function readVerdict(file: string): Promise<AccelVerdict | undefined> {
  try {
    const v = JSON.parse(await readFile(file, 'utf8')) as AccelVerdict;
    return v.accel === 'kvm' || v.accel === 'tcg' ? v : undefined;
  } catch {
    return undefined;
  }
}

async function saveVerdict(file: string, v: AccelVerdict): Promise<void> {
  await mkdir(vmCacheRoot(), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify(v)}\n`);
  await rename(tmp, file);
}

function exitText(code: number): string {
  return code < 0 ? 'qemu was killed by a signal' : `qemu exit ${code}`;
}

function firstLine(text: string): string {
  return text.trim().split('\n')[0]?.slice(0, 200) ?? '';
}

/** Undefined when the boot sector ran under `accel`, else what went wrong. Exported to test the probe itself under TCG. */
export async function probeBootSector(accel: Accel = 'kvm'): Promise<string | undefined> {
  return withScope(async (scope) => {
    const dir = await scope.tempDir('part-image-kvm-');
    const sector = join(dir, 'boot.bin');
    const out = join(dir, 'serial.txt');
    await writeFile(sector, bootSector());
    await writeFile(out, '');
    const r = await runQemu(
      { accel, cpu: accel === 'kvm' ? 'host' : 'max', memoryMb: 32, cpus: 1, kernel: '', append: [], disks: [], serialFiles: [out], bootSector: sector, debugExit: true },
      BOOT_SECTOR_PROBE_MS,
    );
    const printed = await readFile(out, 'utf8').catch(() => '');
    if (r.exitCode === PROBE_EXIT && printed.includes(PROBE_TEXT)) return undefined;
    const what = `a ${accel.toUpperCase()} guest (boot sector, -cpu ${accel === 'kvm' ? 'host' : 'max'})`;
    if (r.timedOut) return `${what} hung for ${BOOT_SECTOR_PROBE_MS / 1000} s`;
    return `${what} failed (${exitText(r.exitCode)})${r.stderr.trim() ? `: ${firstLine(r.stderr)}` : ''}`;
  });
}

/** Undefined when `kernel` booted to its no-root panic under `accel`, else what went wrong. */
export async function probeKernel(kernel: string, accel: Accel = 'kvm'): Promise<string | undefined> {
  return withScope(async (scope) => {
    const dir = await scope.tempDir('part-image-kvm-');
    const out = join(dir, 'serial.txt');
    await writeFile(out, '');
    const r = await runQemu(
      { accel, memoryMb: 256, cpus: 1, kernel, append: ['console=ttyS0', 'panic=-1', 'root=/dev/part-image-none'], disks: [], serialFiles: [out] },
      KERNEL_PROBE_MS,
    );
    const printed = await readFile(out, 'utf8').catch(() => '');
    if (/Kernel panic/.test(printed)) return undefined;
    if (r.timedOut) {
      return printed.includes('Linux version')
        ? `the Linux kernel under ${accel.toUpperCase()} started but did not finish booting within ${KERNEL_PROBE_MS / 1000} s`
        : `the Linux kernel under ${accel.toUpperCase()} printed nothing within ${KERNEL_PROBE_MS / 1000} s`;
    }
    return `the Linux kernel under ${accel.toUpperCase()} stopped early (${exitText(r.exitCode)})${r.stderr.trim() ? `: ${firstLine(r.stderr)}` : ''}`;
  });
}

/**
 * KVM when it really runs guests here, TCG otherwise (with one log line).
 * `kernel` is the kernel the VM will boot; without it only the quick probe
 * runs and a KVM verdict is `confirmed: false` (and not stored).
 */
export async function detectAccel(kernel?: string): Promise<AccelVerdict> {
  const forced = process.env.PART_IMAGE_ACCEL;
  if (forced === 'kvm' || forced === 'tcg') return { accel: forced, reason: `PART_IMAGE_ACCEL=${forced}`, confirmed: forced === 'tcg' };

  const memoKey = kernel ?? '';
  const known = memo.get(memoKey);
  if (known) return known;

  const verdict = await decide(kernel);
  memo.set(memoKey, verdict);
  return verdict;
}

async function decide(kernel: string | undefined): Promise<AccelVerdict> {
  try {
    await access('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return fallback('/dev/kvm is missing or not accessible');
  }
  const file = await verdictFile(kernel);
  const stored = await readVerdict(file);
  if (stored) {
    if (stored.accel === 'tcg') return fallback(stored.reason);
    return stored;
  }
  const quick = await probeBootSector();
  if (quick) {
    const v = fallback(quick);
    await saveVerdict(file, v);
    return v;
  }
  if (!kernel) return { accel: 'kvm', reason: 'a KVM boot-sector guest ran (the kernel probe did not run)', confirmed: false };
  const slow = await probeKernel(kernel);
  const v = slow ? fallback(slow) : { accel: 'kvm' as const, reason: 'a Linux kernel booted under KVM', confirmed: true };
  await saveVerdict(file, v);
  return v;
}

/**
 * Drop the stored verdict for `kernel` (memory and disk): a KVM run that hung
 * without a word on the console means the host changed; the next run probes
 * again.
 */
export async function forgetAccelVerdict(kernel: string): Promise<void> {
  memo.delete(kernel);
  await rm(await verdictFile(kernel), { force: true });
}
