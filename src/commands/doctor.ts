import type { Command } from './common.js';
import { doctor, formatDoctor } from '../doctor.js';
import { checkedJson } from '../schema.js';

export const doctorCommand: Command = {
  name: 'doctor',
  summary: 'list every stage with whether it can run here, and how (rootless, host or VM)',
  usage: `part-image doctor [--json]

  --json prints the same as JSON, as schema/doctor.schema.json describes it.
  Checks the host tools, root, systemd as PID 1, loop devices, whether KVM really runs guests,
  and the VM image cache; says for each stage whether it can run, where, and what to install.

Examples:
  part-image doctor
  part-image doctor --json | jq '.stages[] | select(.canRun | not)'`,
  options: { json: { type: 'boolean' } },
  positionals: [0, 0],
  async run(v) {
    const result = await doctor();
    process.stdout.write(v.json ? checkedJson('doctor', { format: 'part-image-doctor/1', ...result }) : formatDoctor(result));
    return result.stages.every((s) => s.canRun) ? 0 : 3;
  },
};
