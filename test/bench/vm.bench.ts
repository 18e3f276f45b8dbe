// VM benchmarks (npm run bench), measured in one run on this machine:
//   - the portable stage of the demo image, warm cache (a restored VM), next
//     to read+build+fsck+readback+diff of the Debian root (the target: at
//     most 6 s, and at most 2 times that reference);
//   - the nspawn stage in the VM, boot mode, on the Debian root (<= 10 s);
//   - the first run with no saved state (boot once, save, restore) next to
//     a cold-boot run of the same job: the first run must not be slower.
// Each restored run prints its phases with host timestamps.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, bench, describe } from 'vitest';
import { Scope } from '../../src/cleanup.js';
import { readTarTree } from '../../src/input/tar.js';
import { buildRawImage } from '../../src/build/index.js';
import { readImageManifest } from '../../src/image/debugfs-reader.js';
import { e2fsck } from '../../src/tools/e2fsck.js';
import { diffManifests } from '../../src/manifest/diff.js';
import { portableStage } from '../../src/stages/portable.js';
import { nspawnStage } from '../../src/stages/nspawn.js';
import { ensureVmImage } from '../../src/vm/image.js';
import { runVm } from '../../src/vm/run.js';
import { debianRootTar } from '../helpers/debian-root.js';
import { runCli } from '../helpers/cli.js';
import type { VerifyOptions } from '../../src/stages/context.js';

const opts = { iterations: 3, time: 0, warmupIterations: 0 };
const scope = new Scope();
const work = await mkdtemp(join(tmpdir(), 'pi-vm-bench-'));
const tar = await debianRootTar();
const image = await ensureVmImage();
const demo = join(work, 'demo_1.0.raw');
const built = await runCli(['demo', '--output', demo, '--skip', 'portable,nspawn']);
if (built.exitCode !== 0) throw new Error(`demo build failed: ${built.stderr}`);
const debianImg = join(work, 'debian.img');
{
  const tree = await readTarTree(tar, scope);
  await buildRawImage(tree, debianImg, { label: 'root', freeMb: 512, usedMb: tree.usedMb }, scope);
}
const verify = (over: Partial<VerifyOptions> = {}): VerifyOptions => ({
  skip: new Set(), compareMtime: false, bootTimeoutMs: 120_000, allowFailedUnits: [], portable: false, ...over,
});
const seconds = (ms: number) => (ms / 1000).toFixed(2);

/** read + build + fsck + readback + diff of the Debian root, once: the yardstick of the portable target. */
async function pipelineOnce(): Promise<number> {
  const t = performance.now();
  const s = new Scope();
  const tree = await readTarTree(tar, s);
  const img = join(work, 'ref.img');
  await buildRawImage(tree, img, { label: 'root', freeMb: 512, usedMb: tree.usedMb }, s);
  await e2fsck(img);
  const back = await readImageManifest(img);
  diffManifests(tree.manifest, back);
  await s.close();
  return performance.now() - t;
}

const portableTimes: number[] = [];
const referenceTimes: number[] = [];

afterAll(async () => {
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  if (portableTimes.length && referenceTimes.length) {
    const p = mean(portableTimes);
    const r = mean(referenceTimes);
    console.log(`portable stage (demo, warm): ${seconds(p)} s; read+build+fsck+readback+diff of the Debian root: ${seconds(r)} s; ratio ${(p / r).toFixed(2)} (targets: <= 6 s, <= 2x)`);
  }
  await scope.close();
  await rm(work, { recursive: true, force: true });
});

describe('portable stage of the demo, warm cache', () => {
  bench('read+build+fsck+readback+diff of the Debian root (the yardstick)', async () => {
    referenceTimes.push(await pipelineOnce());
  }, opts);
  bench('portable stage, restored VM', async () => {
    const t = performance.now();
    const out = await portableStage.run({ image: demo, imageName: 'demo_1.0.raw', opts: verify(), scope });
    portableTimes.push(performance.now() - t);
    if (out.status !== 'passed') throw new Error(`portable stage: ${out.status} ${out.reason ?? JSON.stringify(out.findings)}`);
    console.log(`portable stage: ${seconds(performance.now() - t)} s; VM ${JSON.stringify(out.details?.vm)}`);
  }, opts);
});

// As in the pipeline, where the readback stage has read the image before: the nspawn stage finds its manifest.
const imageManifest = await readImageManifest(debianImg);

describe('nspawn in the VM, boot mode, Debian root', () => {
  bench('nspawn stage (PART_IMAGE_NSPAWN=vm)', async () => {
    const saved = process.env.PART_IMAGE_NSPAWN;
    process.env.PART_IMAGE_NSPAWN = 'vm';
    try {
      const t = performance.now();
      const out = await nspawnStage.run({ image: debianImg, imageName: 'debian.img', opts: verify(), scope, imageManifest });
      console.log(`nspawn in the VM (boot, Debian): ${seconds(performance.now() - t)} s, ${out.status}; VM ${JSON.stringify(out.details?.vm)} (target <= 10 s)`);
      if (out.status !== 'passed') throw new Error(`nspawn stage: ${out.status} ${out.reason ?? JSON.stringify(out.findings)}`);
    } finally {
      if (saved === undefined) delete process.env.PART_IMAGE_NSPAWN;
      else process.env.PART_IMAGE_NSPAWN = saved;
    }
  }, { iterations: 2, time: 0, warmupIterations: 0 });
});

describe('a first run: no saved state yet, against a cold boot', () => {
  const job = 'systemctl is-active systemd-portabled > "$PI_OUT/p"';
  bench('cold boot of the VM for one job (the way every job ran before)', async () => {
    const r = await runVm({ image, scope, timeoutMs: 600_000, script: job, boot: 'cold' });
    console.log(`cold boot job: ${seconds(r.durationMs)} s`);
  }, { iterations: 1, time: 0, warmupIterations: 0 });
  bench('first restore: boot once, save, restore (a private cache)', async () => {
    // The shared image, with its saved states kept in a fresh folder: none there yet.
    const dir = await mkdtemp(join(tmpdir(), 'pi-vm-bench-state-'));
    try {
      const t = performance.now();
      const r = await runVm({ image: { ...image, dir }, scope, timeoutMs: 900_000, script: job });
      console.log(`first run, no saved state: ${seconds(performance.now() - t)} s (${r.boot}); phases ${JSON.stringify(r.phases)}`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, { iterations: 1, time: 0, warmupIterations: 0 });
});
