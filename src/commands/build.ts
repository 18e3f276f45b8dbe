import type { Command } from './common.js';
import { VERIFY_OPTIONS, emitReport, sizeFlagMb, verifyOptions } from './common.js';
import { buildImage } from '../pipeline.js';
import { ALL_STAGE_NAMES } from '../stages/index.js';
import { parseFormat } from '../build/convert.js';
import { UsageError } from '../errors.js';
import { resolveBuildPaths } from '../raptor/container.js';
import { buildOntoFileMount } from './builder-container.js';
import { parseRole, ROLE_ENV } from '../boot/role.js';

export const buildCommand: Command = {
  name: 'build',
  summary: 'build an ext4 partition image from a root tree and verify it before accepting it',
  usage: `part-image build --input PATH --output FILE [--format raw|qcow2|vmdk|vdi|vhdx|vpc|qed|qcow] [--label L]
                 [--size-mb N] [--free-mb N] [--used-mb N] [--seed UUID] [--target NAME]
                 [--golden FILE [--update-golden] [--golden-allow FILE]] [--check-reproducible]
                 [--skip STAGE,...] [--compare-mtime] [--report-json FILE] [--junit FILE]

  PATH is a directory, a .tar/.tar.gz archive, or a Raptor layer stack (a folder with raptor.json).
  Sizes: in MiB, or with a unit as systemd-repart takes them (base 1024: 512M, 2G, 1T, 65536K).
  Flags win over the env vars SIZE_MB, FREE_MB (default 512) and USED_MB (default: du -sm of
  the input; the env vars are whole MiB, as Raptor's builder has them). Without SIZE_MB the image is the smallest that keeps FREE_MB really free.
  Reproducible images: give --seed UUID and set SOURCE_DATE_EPOCH; two builds of the same tree are
  then byte-identical, wherever the tree is staged (tmpfs or disk, a directory or a tar). With
  --seed, USED_MB defaults to the tree's size as ext4 stores it (from the manifest), not to du -sm
  of the staging filesystem. --check-reproducible (needs --seed and SOURCE_DATE_EPOCH) builds a second time and compares
  the images; on a mismatch it names the first differing byte and the entries that differ.
  Golden manifests: --golden FILE compares the image with FILE (mtimes left out) and rejects it on
  any difference; --update-golden writes FILE, or shows what changed and refreshes it.
  --golden-allow FILE lists expected differences (path glob, code or field, reason); a rule that
  matches nothing fails the stage as stale unless it is marked "optional" (host-dependent).
  The image is written beside FILE and renamed onto it only when every stage passes; a rejected
  image is kept as FILE.rejected and the exit code is 1.
  Roles: --role root|portable|data (detected when absent: no os-release, no init and no unit file
  is a data partition, for which the boot stages do not apply; a portable service needs no init).
  Builder-container mode: inside a Raptor builder container (mounts /input and /output/disk.img),
  --input and --output default to those mounts; PART_IMAGE_BUILDER_ROOT=DIR uses DIR/input and
  DIR/output/disk.img instead; PART_IMAGE_ROLE names the role and PART_IMAGE_REJECTED_DIR a folder
  for rejected images and their reports (docs/raptor.md).

Examples:
  part-image build --input rootfs.tar --output root.img
  part-image build --input ./rootfs --output root.qcow2 --format qcow2 --free-mb 64
  part-image build --input rootfs.tar --output root.img --size-mb 2G
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
    'check-reproducible': { type: 'boolean' },
    ...VERIFY_OPTIONS,
  },
  positionals: [0, 0],
  async run(v) {
    const seed = v.seed as string | undefined;
    if (v['check-reproducible'] && (seed === undefined || !process.env.SOURCE_DATE_EPOCH)) {
      // Said before any work: without both, mke2fs picks a random UUID and hash seed, or stamps the time of the build.
      const missing = [seed === undefined ? '--seed UUID' : '', process.env.SOURCE_DATE_EPOCH ? '' : 'SOURCE_DATE_EPOCH'].filter(Boolean).join(' and ');
      throw new UsageError(`--check-reproducible: this build cannot be reproducible without ${missing}: every build would get ${seed === undefined ? 'a random filesystem UUID and hash seed' : 'the time of the build in its superblock and inodes'}, so two builds never match`,
        `Add ${[seed === undefined ? '--seed $(uuidgen) (keep the UUID with your recipe)' : '', process.env.SOURCE_DATE_EPOCH ? '' : 'SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)'].filter(Boolean).join(' and ')}.`);
    }
    const paths = await resolveBuildPaths(v.input, v.output, process.env);
    if (seed !== undefined && !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(seed)) {
      throw new UsageError(`--seed must be a UUID, got "${seed}"`, 'Generate one with `uuidgen` and keep it with your build recipe.');
    }
    const verify = verifyOptions(v, ALL_STAGE_NAMES);
    // In the builder container the run's env (env.PART_IMAGE_ROLE in Raptor.toml) names the role.
    if (paths.mounts && verify.role === undefined) verify.role = parseRole(process.env[ROLE_ENV], ROLE_ENV);
    const { report, exitCode } = await (paths.mounts ? buildOntoFileMount : buildImage)({
      input: paths.input,
      output: paths.output,
      format: parseFormat((v.format as string | undefined) ?? process.env.OUTPUT_FORMAT),
      label: (v.label as string | undefined) ?? 'root',
      sizeMb: sizeFlagMb('--size-mb', v['size-mb']),
      freeMb: sizeFlagMb('--free-mb', v['free-mb']),
      usedMb: sizeFlagMb('--used-mb', v['used-mb']),
      seed,
      target: v.target as string | undefined,
      verify,
      env: process.env,
    });
    await emitReport(report, v);
    return exitCode;
  },
};
