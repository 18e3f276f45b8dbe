// Where a stage can run on this host, decided in one place for the nspawn
// stage, `part-image doctor` and the CLI's early check of PART_IMAGE_NSPAWN.
// Each stage declares where it runs (Stage.runs) and its host tools
// (Stage.tools); this module turns that and the host's facts into a place:
// - rootless: anywhere its tools are installed;
// - boot (nspawn): on the host as root, with loop devices (the image is
//   loop-mounted: `systemd-nspawn --image` needs udev, which this kind of host
//   lacks) and its tools; else in the part-image VM;
// - portable (portablectl): on the host as root when systemd is PID 1
//   (portablectl needs systemd-portabled) and its tools; else in the VM.
// The VM needs qemu, and to build its image once mmdebstrap and mke2fs.
// PART_IMAGE_NSPAWN=host|vm forces where the nspawn stage runs (no fallback).
import { access, readFile } from 'node:fs/promises';
import { hasTool } from '../exec.js';
import { packageFor } from '../packages.js';
import { cachedVmImage } from '../vm/image.js';
import type { Stage } from './context.js';

export const NSPAWN_WHERE_ENV = 'PART_IMAGE_NSPAWN';

/** What the VM needs on the host: qemu to run it, mmdebstrap and mke2fs to build its root image once. */
export const VM_TOOLS = ['qemu-system-x86_64', 'mmdebstrap', 'mke2fs'];

export type Place = 'host' | 'vm';

/** PART_IMAGE_NSPAWN as given: a forced place, none (unset or empty: choose), or why the value is wrong. */
export function forcedPlace(env: NodeJS.ProcessEnv = process.env): { forced?: Place } | { invalid: string } {
  const value = env[NSPAWN_WHERE_ENV] || undefined;
  if (value === undefined || value === 'host' || value === 'vm') return { forced: value };
  return { invalid: `${NSPAWN_WHERE_ENV} must be 'host' or 'vm' (or unset), not '${value}'` };
}

/** The stage whose place PART_IMAGE_NSPAWN forces. */
export const forcedFor = (stage: Pick<Stage, 'name'>, env: NodeJS.ProcessEnv = process.env) =>
  stage.name === 'nspawn' ? forcedPlace(env) : {};

export interface HostFacts {
  root: boolean;
  /** The command name of PID 1 (/proc/1/comm). */
  pid1: string;
  systemdPid1: boolean;
  /** Loop devices can be set up (/dev/loop-control). */
  loopControl: boolean;
}

export async function hostFacts(): Promise<HostFacts> {
  const pid1 = (await readFile('/proc/1/comm', 'utf8').catch(() => 'unknown')).trim();
  return {
    root: process.getuid?.() === 0,
    pid1,
    systemdPid1: pid1 === 'systemd',
    loopControl: await access('/dev/loop-control').then(() => true, () => false),
  };
}

/** Why a stage that runs `runs` cannot run on the host; [] when it can. `missing`: its tools that are not installed. */
export function hostReasons(runs: Stage['runs'], facts: HostFacts, missing: readonly string[]): string[] {
  const reasons: string[] = [];
  if (runs !== 'rootless' && !facts.root) reasons.push('not root');
  if (runs === 'boot' && !facts.loopControl) reasons.push('no /dev/loop-control');
  if (runs === 'portable' && !facts.systemdPid1) reasons.push(`PID 1 is ${facts.pid1}, not systemd (portablectl needs systemd-portabled)`);
  if (missing.length) reasons.push(`missing ${missing.join(', ')}`);
  return reasons;
}

/** The VM's tools that are missing: a cached VM image needs only qemu, building one needs the rest. */
export function vmMissing(vmImageCached: boolean, present: (tool: string) => boolean): string[] {
  return (vmImageCached ? ['qemu-system-x86_64'] : VM_TOOLS).filter((t) => !present(t));
}

/** The VM's missing tools in words, as the nspawn stage names them. */
export function describeVmMissing(missing: readonly string[]): string {
  if (missing.includes('qemu-system-x86_64')) return 'qemu-system-x86_64 is missing (apt-get install qemu-system-x86)';
  return `the VM image is not built yet and ${missing.join(', ')} (to build it) is missing`;
}

export type Decision =
  | { where: 'rootless' | Place }
  /** `forced`: the forced place could not run it; otherwise neither could. */
  | { unavailable: true; forced?: Place };

/**
 * The place of a stage, from why the host cannot run it (`host`: [] when it
 * can) and what the VM lacks (`vm`): a forced place or nothing; unforced, the
 * host when it can, else the VM. Pure.
 */
export function decidePlace(runs: Stage['runs'], host: readonly string[], vm: readonly string[], forced?: Place): Decision {
  if (runs === 'rootless') return host.length ? { unavailable: true } : { where: 'rootless' };
  if (forced !== 'vm' && !host.length) return { where: 'host' };
  if (forced === 'host') return { unavailable: true, forced };
  if (!vm.length) return { where: 'vm' };
  return forced ? { unavailable: true, forced } : { unavailable: true };
}

const UNAVAILABLE_HINT: Record<'boot' | 'portable', string> = {
  boot: 'run part-image as root with systemd-nspawn installed (apt-get install systemd-container), or let the VM run the boot stages (see `part-image doctor`)',
  portable: 'run part-image as root on a host whose PID 1 is systemd, with portablectl installed (apt-get install systemd-container), or let the VM run it (see `part-image doctor`)',
};

/** "apt-get install e2fsprogs qemu-utils" for these tools. */
export function installHint(tools: readonly string[]): string | undefined {
  const pkgs = [...new Set(tools.map((t) => packageFor(t) ?? t))];
  return pkgs.length ? `apt-get install ${pkgs.join(' ')}` : undefined;
}

/** Where a stage runs (a rootless one: here, as "host"): PART_IMAGE_NSPAWN=host|vm, else the host when it can, else the VM; or why it cannot run. */
export async function placeOf(stage: Pick<Stage, 'name' | 'tools' | 'runs'>, env: NodeJS.ProcessEnv = process.env): Promise<{ where: Place } | { unavailable: string }> {
  const f = forcedFor(stage, env);
  if ('invalid' in f) return { unavailable: f.invalid };
  const missing: string[] = [];
  for (const t of stage.tools) if (!(await hasTool(t))) missing.push(t);
  const host = hostReasons(stage.runs, await hostFacts(), missing);
  const present = new Map<string, boolean>();
  for (const t of VM_TOOLS) present.set(t, await hasTool(t));
  const vm = host.length || f.forced === 'vm' ? vmMissing(Boolean(await cachedVmImage().catch(() => undefined)), (t) => present.get(t)!) : [];
  const d = decidePlace(stage.runs, host, vm, f.forced);
  if ('where' in d) return { where: d.where === 'vm' ? 'vm' : 'host' };
  const hostWhy = `${host.join(', ')}${missing.length ? ` (${installHint(missing)})` : ''}`;
  if (stage.runs === 'rootless') return { unavailable: hostWhy };
  const hint = UNAVAILABLE_HINT[stage.runs];
  if (d.forced === 'host') return { unavailable: `${NSPAWN_WHERE_ENV}=host, but ${hostWhy}; ${hint}` };
  if (d.forced === 'vm') return { unavailable: `${NSPAWN_WHERE_ENV}=vm, but ${describeVmMissing(vm)}; see \`part-image doctor\`` };
  return { unavailable: `not on the host: ${hostWhy}; not in the VM: ${describeVmMissing(vm)}; ${hint}` };
}
