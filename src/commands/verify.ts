import type { Command } from './common.js';
import { VERIFY_OPTIONS, emitReport, verifyOptions } from './common.js';
import { verifyImage } from '../pipeline.js';
import { ALL_STAGE_NAMES } from '../stages/index.js';
import { UsageError } from '../errors.js';

export const verifyCommand: Command = {
  name: 'verify',
  summary: 'run the verification stages on an existing raw image, against its input',
  usage: `part-image verify IMAGE --input PATH [--target NAME] [--skip STAGE,...] [--compare-mtime]
                  [--golden FILE [--update-golden] [--golden-allow FILE]] [--report-json FILE] [--junit FILE]

  Works on any raw ext4 image, for example one made by Raptor's own part-image builder.
  --input is the tree the image was built from. Without it, give --golden FILE (or --skip diff):
  an image is never passed without being compared with something.
  --golden FILE compares the image with a golden manifest (see \`part-image build --help\`); an allow
  rule in --golden-allow FILE that matches no difference is stale and fails the golden stage.

Examples:
  part-image verify part.img --input rootfs.tar
  part-image verify part.img --input ./rootfs --report-json report.json --junit junit.xml`,
  options: { input: { type: 'string', short: 'i' }, ...VERIFY_OPTIONS },
  positionals: [1, 1],
  async run(v, [image]) {
    const verify = verifyOptions(v, ALL_STAGE_NAMES);
    if (v.input === undefined && !v.golden && !verify.skip.has('diff')) {
      throw new UsageError('verify needs --input PATH, the tree the image was built from',
        'Or compare it with a golden manifest: --golden FILE (then the diff stage does not apply), or pass --skip diff.');
    }
    const { report, exitCode } = await verifyImage({
      image,
      input: v.input as string | undefined,
      target: v.target as string | undefined,
      verify,
    });
    await emitReport(report, v);
    return exitCode;
  },
};
