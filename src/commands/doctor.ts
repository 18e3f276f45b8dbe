import type { Command } from './common.js';
import { doctor, formatDoctor } from '../doctor.js';
import { checkedJson } from '../schema.js';
import { log } from '../log.js';
import { quietCause } from './common.js';

export const doctorCommand: Command = {
  name: 'doctor',
  summary: 'list every stage with whether it can run here, and how (rootless, host or VM)',
  usage: `part-image doctor [--json]

  --json prints the same as JSON, as schema/doctor.schema.json describes it. -q prints nothing
  when every stage can run, else one line on stderr naming those that cannot.
  Checks the host tools, root, systemd as PID 1, loop devices, whether KVM really runs guests,
  and the VM image cache; says for each stage whether it can run, where, and what to install.

Examples:
  part-image doctor
  part-image doctor --json | jq '.stages[] | select(.canRun | not)'`,
  options: { json: { type: 'boolean' } },
  positionals: [0, 0],
  async run(v) {
    const result = await doctor();
    const cannot = result.stages.filter((s) => !s.canRun);
    if (v.json) process.stdout.write(checkedJson('doctor', { format: 'part-image-doctor/1', ...result }));
    else if (log.verbosity !== 'quiet') process.stdout.write(formatDoctor(result));
    else quietCause(cannot.length ? `${cannot.length} stage(s) cannot run here: ${cannot.map((s) => `${s.name}${s.hint ? ` (${s.hint})` : ''}`).join('; ')}` : undefined);
    return cannot.length === 0 ? 0 : 3;
  },
};
