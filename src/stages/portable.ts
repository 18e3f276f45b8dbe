// The portable stage: attach the image with portablectl and run its units,
// on the host when systemd is PID 1 there, else in the part-image VM
// (portable-run.ts), with one shell job (portable-job.ts) whose results are
// judged per unit (portable-judge.ts).
//
// Whose fault is what (portableOutcome):
// - the VM did not come up, or the check could not start (a /var/tmp/NAME.raw
//   that is not ours is in the way on the host): the environment's, the stage
//   is skipped (unavailable, exit 3) with what to do;
// - the check ran out of time: the job marks each step it begins (a progress
//   file, and in the VM the console too, which the host keeps even when it has
//   to kill the VM). Out of time while a unit of the image was starting or
//   stopping: a finding about the image (portable-service-timeout, naming the
//   unit). Out of time anywhere else (copying, attaching, reading states):
//   the environment's;
// - otherwise the units' states are judged (judgePortable).
import { notForRole } from '../boot/role.js';
import { roleOf } from './role.js';
import { OPTION } from './options.js';
import { basename } from 'node:path';
import { stat } from 'node:fs/promises';
import type { Finding } from '../types.js';
import { consoleTail } from '../boot/console.js';
import { readImageManifest } from '../image/debugfs-reader.js';
import { matchingUnits, portableApplies, portableNameProblem, portablePrefix } from './portable-lint.js';
import { passedOrFailed, skipped, type Stage, type StageContext, type StageOutcome } from './context.js';
import { IN_THE_WAY, STEP_WORDS, whereJobStopped, type PortableImage } from './portable-job.js';
import { judgePortable } from './portable-judge.js';
import { checkPortable, portableTimeoutMs, type CheckPortableResult } from './portable-run.js';

async function runStage(ctx: StageContext): Promise<StageOutcome> {
  const manifest = ctx.imageManifest ?? (await readImageManifest(ctx.image, { hash: false }));
  const name = basename(ctx.imageName);
  const prefix = portablePrefix(name);
  const units = matchingUnits(manifest, prefix).map((u) => u.name);
  const role = await roleOf(ctx);
  if (role.role === 'data') return skipped(notForRole(role, 'portable'), 'not-applicable');
  if (!units.length && !portableApplies(role, ctx.opts.portable)) {
    return {
      ...skipped(`not a portable service image: no unit file matches the prefix '${prefix}' of ${name} (pass --portable to require one)`, 'not-applicable'),
      details: { prefix },
    };
  }
  if (!portableApplies(role, ctx.opts.portable)) {
    return {
      ...skipped(`not a portable service image: ${role.why}, though a unit matches the prefix '${prefix}' of ${name} (pass --portable or --role portable to require the portable checks)`, 'not-applicable'),
      details: { prefix, role: role.role },
    };
  }
  const nameProblem = portableNameProblem(name);
  if (nameProblem) {
    return { status: 'failed', findings: [{ code: 'portable-bad-name', path: name, message: `portablectl cannot attach an image named ${JSON.stringify(name)}: ${nameProblem}`, actual: name }], details: { prefix } };
  }
  const image: PortableImage = { path: ctx.image, name, units };
  const size = (await stat(ctx.image)).size;
  const timeoutMs = portableTimeoutMs(size, ctx.opts.bootTimeoutMs);
  const r = await checkPortable([image], { scope: ctx.scope, timeoutMs });
  return portableOutcome(r, image, timeoutMs, { prefix, units });
}

const unavailable = (reason: string, details: Record<string, unknown>): StageOutcome => ({
  status: 'skipped', skippedBy: 'unavailable', findings: [], reason, details,
});

/**
 * The stage's verdict on one image's check (see the top of this file for
 * whose fault is what). Pure.
 */
export function portableOutcome(r: CheckPortableResult, image: PortableImage, timeoutMs: number, base: Record<string, unknown> = {}): StageOutcome {
  const details: Record<string, unknown> = { where: r.where, ...base };
  if (r.vm) details.vm = { accel: r.vm.accel, durationMs: r.vm.durationMs, boot: r.vm.boot, phases: r.vm.phases, marks: r.markMs, guest: r.vm.guestMarks };
  const c = r.checks?.[0];
  if (c) {
    details.inspect = c.inspect;
    details.attach = c.attachOutput;
    details.unitStates = Object.fromEntries(
      c.units.map((u) => [u.unit, u.started ? { active: u.props.ActiveState, sub: u.props.SubState, result: u.props.Result, status: u.props.ExecMainStatus } : 'not started (template or unit type not started)']),
    );
    if (c.detachExit !== undefined) details.detach = { exitCode: c.detachExit, output: c.detachOutput };
  }
  const consoleDetails = () => (r.vm ? { console: consoleTail(r.vm.console, 30) } : {});

  // The VM never came up (or failed before the job reported): the environment.
  // design.md: a VM that cannot start is the environment's fault (exit 3), not the image's.
  const cameUp = r.where === 'host' || r.vm?.started === true;
  if (!cameUp || (!r.timedOut && !c)) {
    return unavailable(
      `the part-image VM failed (${r.vmError ?? 'no results'}); the portable check did not run. See details.console; \`part-image doctor\` checks the VM`,
      { ...details, ...consoleDetails() },
    );
  }

  if (r.timedOut) {
    // The host or the VM came up and the job began: where did the time run out?
    const hang = whereJobStopped(r.progress, [image]);
    details.timedOutIn = hang.step;
    const limit = `${Math.round(timeoutMs / 1000)} s`;
    if ((hang.step === 'start' || hang.step === 'stop') && hang.image === 0 && hang.units.length) {
      // A unit of the image hung: a finding about the image. Stopping comes
      // after the states were read, so those are judged as well.
      const what = hang.step === 'start' ? 'did not finish starting' : 'did not stop';
      const cmd = hang.step === 'start' ? `systemctl start ${hang.units[0]}` : `systemctl stop ${hang.units.join(' ')}`;
      const earlier = hang.step === 'stop' && c ? judgePortable(c) : [];
      const timeout: Finding = {
        code: 'portable-service-timeout',
        path: hang.units[0],
        message: `${hang.units.length > 1 ? `one of ${hang.units.join(', ')}` : hang.units[0]} of the attached image ${image.name} ${what}: \`${cmd}\` had not returned when the portable check ran out of time (${limit}, ${r.where === 'vm' ? 'VM boot included' : 'on the host'})`,
        expected: hang.step === 'start' ? 'the start to finish (active, or exited with status 0)' : 'the units to stop',
        actual: `${r.where === 'vm' ? 'the VM was up' : 'on the host'}; the job was still in: ${cmd}`,
      };
      return { status: 'failed', findings: [...earlier.filter((f) => f.path !== hang.units[0]), timeout], details: { ...details, ...consoleDetails() } };
    }
    // Every state was read before the detach: findings about the units still count.
    if (hang.step === 'detach' && c) {
      const findings = judgePortable(c);
      if (findings.length) return passedOrFailed(findings, details);
    }
    return unavailable(
      `the portable check ran out of time (${limit}) ${r.where === 'vm' ? 'in the part-image VM, which did come up,' : 'on the host'} during ${STEP_WORDS[hang.step]}, not while a unit of the image was starting or stopping; the check did not finish. See details${r.vm ? '.console' : ''}`,
      { ...details, ...consoleDetails() },
    );
  }

  if (c && c.attachExit === IN_THE_WAY) {
    // Not the image's problem: a file of that name is in the way.
    const f = `/var/tmp/${image.name}`;
    return unavailable(
      r.where === 'host'
        ? `${f} already exists on this host and is not part-image's (an image of that name is attached or was left behind); the portable check did not run. Remove it: \`portablectl detach --runtime ${f}\` if it is attached, then \`rm ${f}\``
        : `${f} already exists in the part-image VM (two images of the same name in one check); the portable check did not run`,
      details,
    );
  }
  return passedOrFailed(judgePortable(c!), details);
}

export const portableStage: Stage = {
  name: 'portable',
  tools: ['portablectl'],
  runs: 'portable',
  options: { type: 'object', properties: { portable: OPTION.portable, bootTimeoutMs: OPTION.bootTimeoutMs }, required: ['portable', 'bootTimeoutMs'], additionalProperties: false },
  summary: 'attach the image with portablectl --runtime (on the host when systemd is PID 1, else in the VM) and start its units',
  run: runStage,
};

// The job builder, for the tests of other modules that run it by hand.
export { buildPortableJob } from './portable-job.js';
