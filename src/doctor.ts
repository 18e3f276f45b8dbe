// `part-image doctor`: which stages can run on this host, how (rootless, on
// the host as root, or in the VM), and what to install for the others.
// What it checks comes from the stages' declarations (their tools and where
// they run, stages/index.ts), and where each runs is decided by the code the
// stages use (stages/where.ts).
// The JSON output is the DoctorResult object as is; formatDoctor() is the
// human view.
import { hasTool } from './exec.js';
import { packageFor } from './packages.js';
import { PIPELINE_STEPS } from './stages/index.js';
import { decidePlace, forcedFor, hostFacts, hostReasons, installHint, VM_TOOLS, vmMissing, NSPAWN_WHERE_ENV } from './stages/where.js';
import { cachedVmImageState } from './vm/image.js';
import { detectAccel } from './vm/kvm.js';

export type StageHow = 'rootless' | 'host' | 'vm';

export interface DoctorTool {
  tool: string;
  present: boolean;
  /** Debian package that brings it. */
  package?: string;
}

export interface DoctorStage {
  name: string;
  canRun: boolean;
  /** Where it runs when it can; undefined when it cannot. */
  how?: StageHow;
  /** Tools that are missing for the way it would run. */
  missing: string[];
  /** What to do so that it can run (or run on the host rather than in the VM). */
  hint?: string;
  note?: string;
}

export interface DoctorResult {
  root: boolean;
  /** The command name of PID 1 (/proc/1/comm). */
  pid1: string;
  systemdPid1: boolean;
  /** Loop devices can be set up (/dev/loop-control). */
  loopControl: boolean;
  kvm: {
    /** usable: KVM runs guests; unusable: the VM falls back to TCG; unknown: not probed. */
    status: 'usable' | 'unusable' | 'unknown';
    accel?: string;
    reason?: string;
  };
  /** The VM's root image: cached, not built yet (built on first use, about a minute), or unknown. */
  vmImage: 'cached' | 'not-built' | 'damaged' | 'unknown';
  /** Why the cached VM image is damaged (it is rebuilt on first use). */
  vmImageDamage?: string;
  tools: DoctorTool[];
  stages: DoctorStage[];
}

async function detectVm(qemuPresent: boolean): Promise<Pick<DoctorResult, 'kvm' | 'vmImage' | 'vmImageDamage'>> {
  const state = await cachedVmImageState().catch(() => undefined);
  const cached = state?.state === 'ok' ? state.image : undefined;
  const vmImage: DoctorResult['vmImage'] = cached ? 'cached' : state?.state === 'damaged' ? 'damaged' : 'not-built';
  const vmImageDamage = state?.state === 'damaged' ? state.why : undefined;
  if (!qemuPresent) return { vmImage, vmImageDamage, kvm: { status: 'unknown', reason: 'qemu-system-x86_64 is not installed' } };
  try {
    // With the VM's kernel the probe boots it once under KVM (cached per machine); without, only a boot sector.
    const v = await detectAccel(cached?.kernel);
    const status = v.accel !== 'kvm' ? 'unusable' : v.confirmed === false ? 'unknown' : 'usable';
    return { vmImage, vmImageDamage, kvm: { status, accel: v.accel, reason: v.reason } };
  } catch (err) {
    return { vmImage, vmImageDamage, kvm: { status: 'unknown', reason: `KVM probe failed: ${(err as Error).message.split('\n')[0]}` } };
  }
}

export interface DoctorOptions {
  /** Probe KVM (starts tiny qemu guests once per machine; cached). Default true. */
  probeKvm?: boolean;
}

export async function doctor(opts: DoctorOptions = {}): Promise<DoctorResult> {
  const names = [...new Set([...PIPELINE_STEPS.flatMap((s) => s.tools), ...VM_TOOLS, 'losetup'])].sort();
  const present = new Map<string, boolean>(await Promise.all(names.map(async (t) => [t, await hasTool(t)] as const)));
  const tools: DoctorTool[] = names.map((tool) => ({ tool, present: present.get(tool)!, package: packageFor(tool) }));
  const facts = await hostFacts();
  const { kvm, vmImage, vmImageDamage } =
    opts.probeKvm === false
      ? { kvm: { status: 'unknown' as const, reason: 'not probed' }, vmImage: 'unknown' as const }
      : await detectVm(present.get('qemu-system-x86_64')!);

  const missingOf = (ts: readonly string[]) => ts.filter((t) => !present.get(t));
  const vmLacks = vmMissing(vmImage === 'cached', (t) => present.get(t)!);
  const vmNote = kvm.status === 'unusable' ? 'VM runs under TCG (software emulation: slower)' : undefined;

  const stages: DoctorStage[] = PIPELINE_STEPS.map(({ name, tools: needs, runs }) => {
    const missing = missingOf(needs);
    if (runs === 'rootless') {
      return missing.length
        ? { name, canRun: false, missing, hint: installHint(missing) }
        : { name, canRun: true, how: 'rootless' as const, missing };
    }
    const f = forcedFor({ name });
    if ('invalid' in f) return { name, canRun: false, missing, note: f.invalid };
    const host = hostReasons(runs, facts, missing);
    const decision = decidePlace(runs, host, vmLacks, f.forced);
    if ('where' in decision && decision.where === 'host') return { name, canRun: true, how: 'host' as const, missing };
    const hostWhy = host.length ? host : [`${NSPAWN_WHERE_ENV}=vm`];
    const hostHint = [
      !facts.root ? 'run as root' : '',
      missing.length ? installHint(missing) : '',
    ]
      .filter(Boolean)
      .join(' and ');
    if ('where' in decision) {
      return {
        name,
        canRun: true,
        how: 'vm' as const,
        missing,
        note: [`not on the host: ${hostWhy.join('; ')}`, vmNote].filter(Boolean).join('; '),
        hint: runs === 'boot' && hostHint ? `to run it on the host (faster): ${hostHint}` : undefined,
      };
    }
    if (decision.forced === 'host') {
      return { name, canRun: false, missing, note: `${NSPAWN_WHERE_ENV}=host, but not on the host: ${host.join('; ')}`, hint: hostHint || undefined };
    }
    const all = [...new Set([...missing, ...vmLacks])];
    return {
      name,
      canRun: false,
      missing: all,
      note: `not on the host: ${hostWhy.join('; ')}; no VM: missing ${vmLacks.join(', ')}`,
      hint: [hostHint && runs === 'boot' ? `on the host: ${hostHint}` : '', `for the VM: ${installHint(vmLacks)}`].filter(Boolean).join('; or '),
    };
  });

  return { ...facts, kvm, vmImage, vmImageDamage, tools, stages };
}

/** The human view of a doctor result. */
export function formatDoctor(r: DoctorResult): string {
  const lines: string[] = [];
  lines.push(`root:            ${r.root ? 'yes' : 'no'}`);
  lines.push(`PID 1:           ${r.pid1}${r.systemdPid1 ? ' (systemd)' : ' (not systemd)'}`);
  lines.push(`loop devices:    ${r.loopControl ? 'yes' : 'no (/dev/loop-control missing)'}`);
  lines.push(`KVM:             ${r.kvm.status}${r.kvm.reason ? ` (${r.kvm.reason})` : ''}`);
  const vmLine = r.vmImage === 'not-built' ? 'not built yet (built on first use, about a minute)'
    : r.vmImage === 'damaged' ? `cached VM image damaged: will be rebuilt on first use (${r.vmImageDamage})` : r.vmImage;
  lines.push(`VM image:        ${vmLine}`);
  lines.push('');
  const w = Math.max(...r.stages.map((s) => s.name.length));
  lines.push(`${'stage'.padEnd(w)}  run  how       notes`);
  for (const s of r.stages) {
    const notes = [s.note, s.hint ? `hint: ${s.hint}` : ''].filter(Boolean).join('; ');
    lines.push(`${s.name.padEnd(w)}  ${(s.canRun ? 'yes' : 'NO').padEnd(3)}  ${(s.how ?? '-').padEnd(8)}  ${notes}`.trimEnd());
  }
  const missing = r.tools.filter((t) => !t.present);
  lines.push('');
  if (missing.length) {
    lines.push(`missing tools: ${missing.map((t) => `${t.tool}${t.package ? ` (${t.package})` : ''}`).join(', ')}`);
    lines.push(`install: apt-get install ${[...new Set(missing.map((t) => t.package ?? t.tool))].join(' ')}`);
  } else {
    lines.push('all host tools present');
  }
  return `${lines.join('\n')}\n`;
}
