import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from './common.js';
import { VERIFY_OPTIONS, emitReport, verifyOptions } from './common.js';
import { withScope } from '../cleanup.js';
import { buildImage } from '../pipeline.js';
import { ALL_STAGE_NAMES } from '../stages/index.js';
import { parseFormat } from '../build/convert.js';
import { DEMO_NAME, writeDemoTar } from '../demo/tree.js';
import { log } from '../log.js';

export const demoCommand: Command = {
  name: 'demo',
  summary: 'build and verify the built-in example: a busybox portable service, through every stage',
  usage: `part-image demo [--output FILE] [--format raw|qcow2|vmdk] [--skip STAGE,...] [--report-json FILE] [--junit FILE]

  Writes the example root tree (a static busybox, os-release, a portable service unit
  ${DEMO_NAME}.service, a setuid file, a device node and a file capability) as a tar, then
  runs \`part-image build\` on it with every stage: fsck, readback, diff, free space, golden
  (golden/demo.manifest.json), the boot diagnosis, systemd-nspawn (exec mode, busybox) and the
  portable attach (in the part-image VM when systemd is not PID 1 here).
  The default output is ./${DEMO_NAME}_1.0.raw: portablectl takes the unit prefix from the name.

Examples:
  part-image demo
  part-image demo --skip portable --report-json demo.json`,
  options: { output: { type: 'string', short: 'o' }, format: { type: 'string' }, ...VERIFY_OPTIONS },
  positionals: [0, 0],
  async run(v) {
    const output = (v.output as string | undefined) ?? `${DEMO_NAME}_1.0.raw`;
    const verify = verifyOptions(v, ALL_STAGE_NAMES);
    verify.nspawnCommand ??= ['/usr/bin/busybox', 'sh', '-c', 'echo hello from systemd-nspawn'];
    verify.portable = true;
    // The repo's own golden manifest of the demo (golden/README.md says why busybox's content is allowed to differ).
    verify.golden ??= fileURLToPath(new URL('../../golden/demo.manifest.json', import.meta.url));
    if (!v.golden) verify.goldenAllow ??= fileURLToPath(new URL('../../golden/demo.allow.json', import.meta.url));
    const { report, exitCode } = await withScope(async (scope) => {
      const dir = await scope.tempDir('part-image-demo-');
      const tar = join(dir, `${DEMO_NAME}.tar`);
      await writeDemoTar(tar);
      log.info(`demo: root tree written as a tar (${tar}); building ${output}`);
      return buildImage({
        input: tar, output, format: parseFormat(v.format as string | undefined), label: DEMO_NAME,
        freeMb: '16', verify, env: process.env,
      });
    });
    report.input = 'built-in demo tree';
    await emitReport(report, v);
    return exitCode;
  },
};
