// Builder-container mode, orchestrated: the build runs in a staging folder
// and only an accepted image is copied into the output file mount
// (raptor/container.ts). A rejected image is kept where its owner can find
// it: in Raptor's container /output/disk.img.rejected lies in the ephemeral
// root and is lost with it, so PART_IMAGE_REJECTED_DIR names a folder for
// rejected images and their JSON reports (the builder's .rapt points it at
// its optional cache mount), and the log says where both are.
import { mkdir, rename, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { withScope } from '../cleanup.js';
import { log } from '../log.js';
import { buildImage, type BuildRequest, type PipelineResult } from '../pipeline.js';
import { writeJsonReport } from '../report/json.js';
import { REJECTED_DIR_ENV, copyAcceptedImage, copyInPlace } from '../raptor/container.js';

async function moveOut(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV' && (err as NodeJS.ErrnoException).code !== 'EBUSY') throw err;
    await copyInPlace(from, to);
    await rm(from, { force: true });
  }
}

/** buildImage onto a bind-mounted output file: staged beside it (or in $TMPDIR), copied in once accepted. */
export async function buildOntoFileMount(req: BuildRequest, env: NodeJS.ProcessEnv = process.env): Promise<PipelineResult> {
  const output = resolve(req.output);
  const keepDir = env[REJECTED_DIR_ENV] ? resolve(env[REJECTED_DIR_ENV]) : undefined;
  return withScope(async (scope) => {
    const dir = await scope.tempDir('.part-image-stage-', dirname(output)).catch(() => scope.tempDir('part-image-stage-'));
    // Same base name: the portable stage takes the unit prefix from it.
    const staged = join(dir, basename(output));
    const result = await buildImage({ ...req, output: staged });
    const { report } = result;
    report.output = output;
    if (report.accepted && result.exitCode === 0) {
      await log.step('copy', () => copyAcceptedImage(scope, staged, output));
      report.image = output;
      return result;
    }
    if (keepDir) await mkdir(keepDir, { recursive: true });
    if (report.image === `${staged}.rejected`) {
      const kept = keepDir ? join(keepDir, `${basename(output)}.rejected`) : `${output}.rejected`;
      await moveOut(report.image, kept);
      report.image = kept;
      log.warn(`rejected image kept at ${kept}${keepDir ? '' : ` (in a Raptor container this is the ephemeral root: set ${REJECTED_DIR_ENV} to a mounted folder to keep it)`}`);
    }
    if (keepDir) {
      const file = join(keepDir, `${basename(output)}.report.json`);
      await writeJsonReport(file, report);
      log.warn(`report: ${file}`);
    }
    return result;
  });
}
