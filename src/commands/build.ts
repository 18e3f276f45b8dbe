import type { Command } from './common.js';
import { VERIFY_OPTIONS, emitReport, verifyOptions } from './common.js';
import { buildImage } from '../pipeline.js';
import { ALL_STAGE_NAMES } from '../stages/index.js';
import { parseFormat } from '../build/convert.js';
import { UsageError } from '../errors.js';

export const buildCommand: Command = {
  name: 'build',
  summary: 'build an ext4 partition image from a root tree and verify it before accepting it',
  usage: `part-image build --input PATH --output FILE [--format raw|qcow2|vmdk] [--label L]
                 [--size-mb N] [--free-mb N] [--used-mb N] [--seed UUID] [--target NAME]
                 [--golden FILE [--update-golden]] [--skip STAGE,...] [--compare-mtime]
                 [--report-json FILE] [--junit FILE]

  PATH is a directory, a .tar/.tar.gz archive, or a Raptor layer stack (a folder with raptor.json).
  Sizes: flags win over the env vars SIZE_MB, FREE_MB (default 512) and USED_MB (default: du -sm of
  the input). Without SIZE_MB the image is the smallest that keeps FREE_MB really free.
  The image is written beside FILE and renamed onto it only when every stage passes; a rejected
  image is kept as FILE.rejected and the exit code is 1.

Examples:
  part-image build --input rootfs.tar --output root.img
  part-image build --input ./rootfs --output root.qcow2 --format qcow2 --free-mb 64
  SOURCE_DATE_EPOCH=1700000000 part-image build --input rootfs.tar --output a.img --seed 6e0c5a2a-0f3c-4e7b-9a3e-1d2c3b4a5f60`,
  options: {
    input: { type: 'string', short: 'i' },
    output: { type: 'string', short: 'o' },
    format: { type: 'string' },
    label: { type: 'string' },
    'size-mb': { type: 'string' },
    'free-mb': { type: 'string' },
    'used-mb': { type: 'string' },
    seed: { type: 'string' },
    ...VERIFY_OPTIONS,
  },
  positionals: [0, 0],
  async run(v) {
    if (typeof v.input !== 'string') throw new UsageError('build needs --input PATH', 'Give a directory, a tar archive or a Raptor layer stack.');
    if (typeof v.output !== 'string') throw new UsageError('build needs --output FILE', 'Give the path of the image to write.');
    const seed = v.seed as string | undefined;
    if (seed !== undefined && !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(seed)) {
      throw new UsageError(`--seed must be a UUID, got "${seed}"`, 'Generate one with `uuidgen` and keep it with your build recipe.');
    }
    const { report, exitCode } = await buildImage({
      input: v.input,
      output: v.output,
      format: parseFormat((v.format as string | undefined) ?? process.env.OUTPUT_FORMAT),
      label: (v.label as string | undefined) ?? 'root',
      sizeMb: v['size-mb'] as string | undefined,
      freeMb: v['free-mb'] as string | undefined,
      usedMb: v['used-mb'] as string | undefined,
      seed,
      target: v.target as string | undefined,
      verify: verifyOptions(v, ALL_STAGE_NAMES),
      env: process.env,
    });
    await emitReport(report, v);
    return exitCode;
  },
};
