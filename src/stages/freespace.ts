// freespace stage: reports the free MiB; below FREE_MB is a finding when the size was not fixed.
//
// A read-write root with next to no space left ('root-full'): the boot
// stages cannot see it (nspawn boots on --volatile=overlay, so its writes
// never fail), but a read-write boot writes from its first second on:
// /etc/machine-id, journald's files under /var/log/journal (allocated in
// 8 MiB steps), /var/lib/systemd/random-seed, utmp/wtmp, logind's and the
// units' state. Below ROOT_MIN_FREE_MB (two such journal steps, with what
// else the first boot writes well inside the second) or ROOT_MIN_FREE_INODES,
// a root that is not read-only gets the finding. Off with --allow-full, for
// a root whose fstab mounts / read-only, and (at merge) for the read-only
// role: rootReadOnly() is the one call site the image-roles module feeds.
import { readSuperblock } from '../tools/dumpe2fs.js';
import { manifestLookup, resolvePath } from '../boot/resolve.js';
import { readImageFiles } from '../boot/read-files.js';
import { fstabRootReadOnly } from '../boot/boot-needs.js';
import { hasSystemdInit } from '../boot/probe-files.js';
import type { Finding } from '../types.js';
import { imageManifestOf, type Stage, type StageContext } from './context.js';

export const ROOT_MIN_FREE_MB = 16;
export const ROOT_MIN_FREE_INODES = 64;

/** Whether the image is a root that boots read-write, and why not when it is not. */
async function readWriteRoot(ctx: StageContext): Promise<{ readWrite: boolean; why: string }> {
  if (ctx.opts.allowFull) return { readWrite: false, why: '--allow-full' };
  const manifest = await imageManifestOf(ctx, { hash: false });
  const lookup = manifestLookup(manifest);
  // Stand-in for the image-roles module: a root is what boots systemd.
  if (!hasSystemdInit(lookup)) return { readWrite: false, why: 'not a root (no systemd to boot)' };
  const fstab = resolvePath(lookup, '/etc/fstab');
  if (fstab.ok && fstab.entry.type === 'file') {
    const text = (await readImageFiles(ctx.image, [fstab.path])).get(fstab.path)?.toString('utf8') ?? '';
    if (fstabRootReadOnly(text)) return { readWrite: false, why: '/etc/fstab mounts / read-only' };
  }
  return { readWrite: true, why: 'a root that boots read-write' };
}

export const freespaceStage: Stage = {
  name: 'freespace',
  tools: ['dumpe2fs', 'debugfs'],
  runs: 'rootless',
  // Whole MiB, as FREE_MB is (README: 0 to 16777215).
  options: {
    type: 'object',
    properties: { requiredFreeMb: { type: 'integer', minimum: 0, maximum: 16777215 }, allowFull: { type: 'boolean' } },
    additionalProperties: false,
  },
  summary: 'free space left in the filesystem, against FREE_MB; a read-write root with next to none left',
  async run(ctx) {
    const sb = await readSuperblock(ctx.image);
    const freeMb = Math.floor(((sb.freeBlocks * sb.blockSize) / 1048576) * 10) / 10;
    const sizeMb = (sb.blockCount * sb.blockSize) / 1048576;
    const details: Record<string, unknown> = { freeMb, sizeMb, freeInodes: sb.freeInodes, requiredFreeMb: ctx.opts.requiredFreeMb };
    const findings: Finding[] = [];
    const need = ctx.opts.requiredFreeMb;
    if (need !== undefined && freeMb < need) {
      findings.push({ code: 'free-space', message: `only ${freeMb} MiB free, FREE_MB asks for ${need} MiB`, field: 'freeMb', expected: need, actual: freeMb });
    }
    if (freeMb < ROOT_MIN_FREE_MB || sb.freeInodes < ROOT_MIN_FREE_INODES) {
      const root = await readWriteRoot(ctx);
      details.readWriteRoot = root.readWrite;
      if (root.readWrite) {
        const short = freeMb < ROOT_MIN_FREE_MB ? `${freeMb} MiB free (under ${ROOT_MIN_FREE_MB} MiB)` : `${sb.freeInodes} free inodes (under ${ROOT_MIN_FREE_INODES})`;
        findings.push({
          code: 'root-full',
          field: freeMb < ROOT_MIN_FREE_MB ? 'freeMb' : 'freeInodes',
          message: `the root filesystem is all but full: ${short}; a read-write boot fails to write /etc/machine-id, journald's files, utmp/wtmp and logind's state (the nspawn stage cannot see this: it boots on a volatile overlay); give it room (--free-mb, or a larger --size-mb), mount / read-only in /etc/fstab, or pass --allow-full`,
          expected: { freeMb: ROOT_MIN_FREE_MB, freeInodes: ROOT_MIN_FREE_INODES },
          actual: { freeMb, freeInodes: sb.freeInodes },
        });
      } else details.fullAllowed = root.why;
    }
    return { status: findings.length ? 'failed' : 'passed', findings, details };
  },
};
