import type { Command } from './common.js';
import { VERIFY_OPTIONS, emitReport, verifyOptions } from './common.js';
import { verifyImage } from '../pipeline.js';
import { ALL_STAGE_NAMES, BOOT_STAGES } from '../stages/index.js';

export const bootCommand: Command = {
  name: 'boot',
  summary: 'diagnose and boot an image (systemd-nspawn, portablectl); print the cause first',
  usage: `part-image boot IMAGE [--nspawn] [--portable] [--boot-timeout 120s] [--boot-stall 30s] [--allow-failed-unit UNIT]
                [--nspawn-command 'CMD ARGS'] [--report-json FILE] [--junit FILE]

  The image must be self-contained (a qcow2 or vmdk that refers to another file is refused,
  exit 2) and sound: one the kernel would refuse, that e2fsck -fn finds damaged or that cannot
  be read back is refused (exit 2) before anything mounts it; part-image verify lists why.
  Runs only the rootless boot diagnosis (no init, no os-release, wrong CPU, a missing ELF
  interpreter or library, broken usr-merge links) and the boot stages. When something stops
  the image from booting, the first line printed is its cause.
  --nspawn     only the systemd-nspawn boot (leave out the portable stages)
  --portable   the image must be a portable service: a unit matching its name prefix is required
  --boot-timeout  the longest a boot may take (default 120s)
  --boot-stall    end the boot as a hang when no boot job changed for this long (default 30s);
               a boot that says it fell into rescue or emergency mode ends at once
  An image with systemd boots with -b and a probe; one without is run with --nspawn-command.
  systemd-nspawn runs on the host when it can (root, systemd-container), else inside the
  part-image VM (--image=); PART_IMAGE_NSPAWN=host|vm forces one. The portable attach needs
  systemd as PID 1, so it runs in the VM on hosts without it.

Examples:
  part-image boot root.img
  part-image boot app_1.0.raw --portable
  part-image boot tiny.img --nspawn --nspawn-command '/usr/bin/busybox true'`,
  options: { nspawn: { type: 'boolean' }, ...VERIFY_OPTIONS },
  positionals: [1, 1],
  async run(v, [image]) {
    const verify = verifyOptions(v, ALL_STAGE_NAMES);
    const stages = v.nspawn && !v.portable ? BOOT_STAGES.filter((s) => !s.name.startsWith('portable')) : BOOT_STAGES;
    const { report, exitCode } = await verifyImage({ image, verify, requireReadable: true }, stages, 'boot');
    await emitReport(report, v);
    return exitCode;
  },
};
