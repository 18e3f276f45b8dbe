// Corpus, issue 14 item 4: a healthy Debian root whose name prefix matches a
// unit in it (dbus_1.0.img, systemd_1.img, default_1.img) is a root image,
// not a portable service: `part-image boot` accepts it with the portable
// stages left in (no --skip portable), and they are not applicable.
// NEEDS THE IMAGE-ROLES MODULE (issue 9): until it decides whether the
// portable stages apply (stages/portable-lint.ts portableApplies()), the
// name prefix does, and these fail with 'portable-bad-name'.
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Report } from '../src/types.js';
import { runCli } from './helpers/cli.js';
import { extractDebianRoot, makeImage } from './fixtures/boot/images.js';

const tmp = await mkdtemp(join(tmpdir(), 'part-image-corpus-roles-'));
const healthy = join(tmp, 'healthy.img');
afterAll(() => rm(tmp, { recursive: true, force: true }));

beforeAll(async () => {
  expect(process.getuid?.(), 'the corpus boots images: it needs root').toBe(0);
  await extractDebianRoot(join(tmp, 'root'));
  await makeImage(join(tmp, 'root'), healthy, 512);
});

describe('corpus: no false alarms from names', () => {
  for (const name of ['dbus_1.0.img', 'systemd_1.img', 'default_1.img']) {
    it(`a healthy Debian root named ${name} is a root image, accepted`, async () => {
      const image = join(tmp, name);
      await copyFile(healthy, image);
      const r = await runCli(['boot', image, '--report-json', `${image}.json`]);
      const report = JSON.parse(await readFile(`${image}.json`, 'utf8')) as Report;
      expect(r.exitCode, r.stdout).toBe(0);
      expect(report.cause).toBeUndefined();
      for (const s of ['portable-lint', 'portable']) {
        expect(report.stages.find((x) => x.name === s)).toMatchObject({ status: 'skipped', skippedBy: 'not-applicable' });
      }
    });
  }
});
