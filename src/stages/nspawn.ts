// The nspawn stage: boot the image under systemd-nspawn and judge the boot.
//
// Modes:
// - exec: ctx.opts.nspawnCommand is given. The command runs as the
//   container's first process; exit status 0 passes. An explicit command wins
//   over booting, even when the image has systemd.
// - boot: the image's init is systemd. It boots with -b; two probe units are
//   bound in from the host:
//   - part-image-probe.service (After=default.target, wanted on the init
//     command line) prints the system state, the default target's state and
//     every failed unit with its last journal lines, then powers off at once
//     (systemctl --force --force: the root is a volatile overlay);
//   - part-image-jobs.timer fires part-image-jobs.service every 1-3 s (a
//     tenth of the stall limit),
//     independently of the boot transaction (DefaultDependencies=no,
//     IgnoreOnIsolate=yes). Once the boot is late (half the boot timeout) it
//     prints the pending jobs and the failed units, whenever they change.
//     That is the second channel: when the boot never reaches the default
//     target, the last snapshot names what is still pending. In emergency
//     mode (state "maintenance") it reports at once and powers off, so that
//     such a boot fails fast with 'emergency-mode' instead of timing out.
//   Both print to /dev/console lines that start with PART-IMAGE-PROBE, so
//   systemd's own status lines around them do not matter.
// - neither (no systemd, no command): the stage FAILS with 'no-boot-command'.
//   Not skipped: a skipped stage would either block with a misleading
//   "unavailable" (exit 3) or pass silently as "not applicable". The
//   diagnosis stage has already named the missing init.
//
// Where it runs (details.where):
// - host: as root with systemd-nspawn installed. The image is loop-mounted
//   read-only and nspawn runs on the mount (-D): --image needs udev, which
//   this kind of host lacks (../shared/docs/host-notes.md, "nspawn without udev").
// - vm: otherwise, when the part-image VM can run (qemu, and its image cached
//   or buildable). In the VM systemd is PID 1 and udev runs, so nspawn takes
//   the image itself with --image= (the real dissect/udev path) from a
//   read-only SCSI disk; the probe files are copied in. Same arguments,
//   same probe, same judge. A VM that fails to start is the environment's
//   fault: skipped (unavailable, exit 3), not a finding.
// - PART_IMAGE_NSPAWN=host|vm forces one place (no fallback); unset means
//   the host when it can, else the VM. When neither can run, the stage is
//   skipped (unavailable) with both reasons. The choice is stages/where.ts's,
//   which doctor shares.
// nspawn runs with --volatile=overlay, so nothing is ever written to the
// image. The container, the mount and the loop device (or the VM) are
// released before the stage returns (and by ctx.scope if the run is
// interrupted).
import { notForRole } from '../boot/role.js';
import { roleOf } from './role.js';
import { portableNspawnCommand } from './portable-exec.js';
import { access, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { RunResult } from '../exec.js';
import { loopMountReadOnly } from '../image/loop-mount.js';
import { buildNspawnArgs, machineName, runNspawn, type NspawnOptions } from '../tools/nspawn.js';
import { manifestLookup, treeLookup, type Lookup } from '../boot/resolve.js';
import { runNspawnInVm, type NspawnInVmResult } from '../vm/nspawn-in-vm.js';
import { consoleTail } from '../boot/console.js';
import type { VmResult } from '../vm/run.js';
import { outputTail, judgeBoot } from '../boot/probe.js';
import { NSPAWN_INIT_PATHS, hasSystemdInit, writeProbe } from '../boot/probe-files.js';
import { BootWatch, DEFAULT_BOOT_STALL_MS } from '../boot/boot-watch.js';
import { probeShellProblem } from '../boot/shell.js';

import { skipped, type Stage, type StageContext, type StageOutcome, imageManifestOf } from './context.js';
import { OPTION } from './options.js';
import { placeOf } from './where.js';

// ---- the stage -------------------------------------------------------------

/** What one nspawn run gives the judges, wherever it ran. */
type NspawnRun = Pick<RunResult, 'stdout' | 'stderr' | 'exitCode' | 'timedOut'>;
type Runner = (o: Omit<NspawnOptions, 'directory' | 'machine'>, watch?: BootWatch) => Promise<NspawnRun>;

/** The VM did not deliver nspawn's result: the environment's fault, not the image's. */
class VmFailed extends Error {
  constructor(readonly r: NspawnInVmResult) {
    super(r.vmError);
  }
}

/** Where the stage runs: PART_IMAGE_NSPAWN=host|vm, else the host when it can, else the VM; or why it cannot run (stages/where.ts). */
export function nspawnWhere(env: NodeJS.ProcessEnv = process.env): Promise<{ where: 'host' | 'vm' } | { unavailable: string }> {
  return placeOf(nspawnStage, env);
}

async function runStage(ctx: StageContext): Promise<StageOutcome> {
  // The role needs the manifest; when it cannot be read here (no debugfs), the stage goes on as for a root.
  const role = (await roleOf(ctx).catch(() => undefined)) ?? { role: 'root' as const, forced: false, why: '' };
  if (role.role === 'data') return skipped(notForRole(role, 'nspawn'), 'not-applicable');
  if (role.role === 'portable' && !ctx.opts.nspawnCommand) {
    const exec = await portableNspawnCommand(ctx);
    if ('reason' in exec) return skipped(exec.reason, 'not-applicable');
    ctx = { ...ctx, opts: { ...ctx.opts, nspawnCommand: exec.command } };
  }
  const chosen = await nspawnWhere();
  if ('unavailable' in chosen) return skipped(chosen.unavailable, 'unavailable');
  const { where } = chosen;

  const work = await ctx.scope.tempDir('part-image-nspawn-');
  const probeDir = join(work, 'probe');
  await mkdir(probeDir);
  const machine = machineName();

  if (where === 'vm') {
    // nspawn --image in the VM: the image is a read-only SCSI disk; the probe files are copied in.
    const lookup = manifestLookup(await imageManifestOf(ctx, { hash: false }));
    let vm: VmResult | undefined;
    const runner: Runner = async (o) => {
      const r = await runNspawnInVm({
        image: ctx.image,
        args: buildNspawnArgs({ ...o, directory: '/', machine }),
        hostDir: o.bindRo?.length ? probeDir : undefined,
        timeoutMs: ctx.opts.bootTimeoutMs,
        scope: ctx.scope,
      });
      vm = r.vm;
      if (r.exitCode === undefined) throw new VmFailed(r);
      return { stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode, timedOut: r.timedOut };
    };
    const vmDetails = () => (vm ? { vm: { accel: vm.accel, durationMs: vm.durationMs, boot: vm.boot, phases: vm.phases, guest: vm.guestMarks } } : {});
    try {
      const out = await judgeRun(ctx, lookup, probeDir, runner, { forceOff: true });
      return { ...out, details: { where, ...out.details, ...vmDetails() } };
    } catch (err) {
      if (!(err instanceof VmFailed)) throw err;
      // design.md: a VM that cannot start is the environment's fault (exit 3), not the image's.
      return {
        ...skipped(`the part-image VM failed (${err.message}); the nspawn stage did not run. See details.console; \`part-image doctor\` checks the VM`, 'unavailable'),
        details: { where, ...vmDetails(), console: consoleTail(err.r.vm.console, 30) },
      };
    }
  }

  const { dir: mnt, release } = await loopMountReadOnly(ctx.image, ctx.scope);
  try {
    // On the host the console is watched live: rescue/emergency words and a stalled boot end it early (boot/boot-watch.ts).
    const out = await judgeRun(ctx, treeLookup(mnt), probeDir, (o, watch) => runNspawn({ ...o, directory: mnt, machine }, ctx.opts.bootTimeoutMs, watch?.watch));
    return { ...out, details: { where, ...out.details } };
  } finally {
    await release();
  }
}

/** Exec or boot mode through `run`, judged the same wherever it runs. `forceOff`: the runner reads the probe's report file (the VM). */
async function judgeRun(ctx: StageContext, lookup: Lookup, probeDir: string, run: Runner, o: { forceOff?: boolean } = {}): Promise<StageOutcome> {
  const command = ctx.opts.nspawnCommand;
  const started = Date.now();
  if (command?.length) {
    const out = await run({ mode: 'exec', command });
    const details = { mode: 'exec', command, exitCode: out.exitCode, timedOut: out.timedOut, runMs: Date.now() - started };
    if (out.timedOut) {
      return {
        status: 'failed',
        details,
        findings: [
          {
            code: 'command-timeout',
            path: command[0],
            message: `the command ${command.join(' ')} did not end within ${Math.round(ctx.opts.bootTimeoutMs / 1000)} s; raise --boot-timeout or make it end`,
            actual: outputTail(`${out.stdout}\n${out.stderr}`, 20),
          },
        ],
      };
    }
    if (out.exitCode !== 0) {
      const lines = outputTail(`${out.stdout}\n${out.stderr}`, 20);
      return {
        status: 'failed',
        details,
        findings: [
          {
            code: 'command-failed',
            path: command[0],
            message: `the command ${command.join(' ')} exited with status ${out.exitCode} in the container${lines.length ? `; last output: ${lines.at(-1)}` : ''}`,
            expected: 0,
            actual: { exitStatus: out.exitCode, output: lines },
          },
        ],
      };
    }
    return { status: 'passed', findings: [], details };
  }

  if (!hasSystemdInit(lookup)) {
    return {
      status: 'failed',
      details: { mode: 'none' },
      findings: [
        {
          code: 'no-boot-command',
          message: `the image has no systemd to boot (none of ${NSPAWN_INIT_PATHS.join(', ')} is systemd) and no command was given; pass --nspawn-command to run a program in it, or --skip nspawn`,
        },
      ],
    };
  }

  const shell = probeShellProblem(lookup);
  if (shell) return { status: 'failed', details: { mode: 'boot', booted: false }, findings: [shell] };

  const stallMs = Math.min(ctx.opts.bootStallMs ?? DEFAULT_BOOT_STALL_MS, ctx.opts.bootTimeoutMs);
  const probe = await writeProbe(probeDir, stallMs, { forceOff: o.forceOff });
  const watch = new BootWatch(stallMs);
  const out = await run({ mode: 'boot', bindRo: probe.bindRo, initArgs: probe.initArgs }, watch);
  const judged = judgeBoot(out, { ...ctx.opts, bootStallMs: stallMs }, watch.finish());
  return {
    status: judged.findings.length ? 'failed' : 'passed',
    findings: judged.findings,
    details: { mode: 'boot', ...judged.details, runMs: Date.now() - started },
  };
}

export const nspawnStage: Stage = {
  name: 'nspawn',
  tools: ['systemd-nspawn', 'mount', 'umount'],
  runs: 'boot',
  options: {
    type: 'object',
    properties: {
      bootTimeoutMs: OPTION.bootTimeoutMs,
      // --boot-stall: no boot job changed for this long ends the boot as a hang.
      bootStallMs: { type: 'integer', minimum: 1 },
      // Unit names or bare service names ("foo" allows foo.service).
      allowFailedUnits: { type: 'array', items: { type: 'string' } },
      nspawnCommand: OPTION.nspawnCommand,
    },
    required: ['bootTimeoutMs', 'allowFailedUnits'],
    additionalProperties: false,
  },
  summary: 'boot the image under systemd-nspawn (on the host as root, else in the VM): systemd images to their default target with no failed unit, others run --nspawn-command',
  run: runStage,
};
