// reproducible stage (--check-reproducible): builds the same input a second
// time and compares the two raw images byte for byte. On a mismatch it names
// the first differing byte and what owns each differing block: superblock
// fields, inode fields and the paths of those inodes, data blocks and the
// files they belong to, and the manifest entries that read back differently.
import { rm } from 'node:fs/promises';
import { settleAll } from '../cleanup.js';
import type { Finding } from '../types.js';
import { compareFiles, readBlock, type ByteComparison } from '../image/byte-compare.js';
import { blockRole, RESERVED_INODES } from '../image/block-owner.js';
import { readImageLayout, type ImageLayout } from '../tools/dumpe2fs.js';
import { blockInodes, inodePaths } from '../tools/debugfs-icheck.js';
import { differingFields, fieldAt, INODE_FIELDS, SUPERBLOCK_FIELDS } from '../image/ext4-fields.js';
import { readImageManifest } from '../image/debugfs-reader.js';
import { diffManifests } from '../manifest/diff.js';
import { showValue } from '../manifest/diff-format.js';
import { passedOrFailed, skipped, type Stage } from './context.js';

export const reproducibleStage: Stage = {
  name: 'reproducible',
  tools: ['mke2fs', 'debugfs', 'dumpe2fs'],
  runs: 'rootless',
  options: { type: 'object', properties: { checkReproducible: { type: 'boolean' } }, additionalProperties: false },
  summary: 'build the input a second time and compare the two images byte for byte (--check-reproducible)',
  async run(ctx) {
    if (!ctx.opts.checkReproducible) return skipped('not asked for (use --check-reproducible)', 'not-applicable');
    if (!ctx.rebuild) return skipped('only `part-image build` can build a second time', 'not-applicable');
    const second = `${ctx.image}.second`;
    ctx.scope.defer(`remove ${second}`, () => rm(second, { force: true }));
    await ctx.rebuild.into(second);
    const cmp = await compareFiles(ctx.image, second);
    if (cmp.identical) {
      await rm(second, { force: true });
      return passedOrFailed([], { sha256: cmp.sha256A, bytes: cmp.sizeA, summary: `two builds are byte-identical, sha256 ${cmp.sha256A}` });
    }
    const findings = await explainDifference(ctx.image, second, cmp, { seeded: ctx.rebuild.seeded });
    await rm(second, { force: true });
    return passedOrFailed(findings, {
      sha256: [cmp.sha256A, cmp.sha256B], firstOffset: cmp.firstOffset, differingBlocks: cmp.blockCount,
      summary: `the two builds differ in ${cmp.blockCount} blocks, first at byte ${cmp.firstOffset}`,
    });
  },
};

export interface ExplainOptions {
  /** Whether --seed and SOURCE_DATE_EPOCH were both given (without them no build is reproducible). */
  seeded?: boolean;
  /** Most entries named, one finding each. */
  maxEntries?: number;
}

interface InodeDiff {
  fields: Set<string>;
  blocks: number;
}

/** Findings that say where images `a` and `b` differ: the first byte, metadata by name, inodes by path. */
export async function explainDifference(a: string, b: string, cmp: ByteComparison, o: ExplainOptions = {}): Promise<Finding[]> {
  const findings: Finding[] = [];
  if (cmp.sizeA !== cmp.sizeB) {
    findings.push({
      code: 'reproducible-size', field: 'size', expected: cmp.sizeA, actual: cmp.sizeB,
      message: `the two builds have different sizes: ${cmp.sizeA} and ${cmp.sizeB} bytes (the sizing depends on something that changed between them)`,
    });
  }
  const layout = await readImageLayout(a);
  const bs = layout.blockSize;
  const metadata = new Map<string, { groups: Set<number>; fields: Set<string> }>();
  const inodes = new Map<number, InodeDiff>();
  const dataBlocks: number[] = [];
  const inodeOf = (ino: number) => {
    let d = inodes.get(ino);
    if (!d) inodes.set(ino, (d = { fields: new Set(), blocks: 0 }));
    return d;
  };
  for (const block of cmp.blocks) {
    const role = blockRole(layout, block);
    if (role.kind === 'other') {
      dataBlocks.push(block);
      continue;
    }
    const [ba, bb] = await Promise.all([readBlock(a, block, bs), readBlock(b, block, bs)]);
    if (role.kind === 'inode-table') {
      for (let slot = 0; slot * layout.inodeSize < bs; slot++) {
        const sa = ba.subarray(slot * layout.inodeSize, (slot + 1) * layout.inodeSize);
        const sb = bb.subarray(slot * layout.inodeSize, (slot + 1) * layout.inodeSize);
        if (sa.equals(sb)) continue;
        const d = inodeOf(role.firstInode + slot);
        for (const f of differingFields(sa, sb, INODE_FIELDS, 'in-inode xattrs')) d.fields.add(f);
      }
      continue;
    }
    const key = role.kind;
    const m = metadata.get(key) ?? { groups: new Set<number>(), fields: new Set<string>() };
    m.groups.add(role.group);
    if (role.kind === 'superblock') {
      // The superblock is 1024 bytes at byte 1024 of the filesystem: block 0 holds it at offset 1024 with larger blocks.
      const off = block === 0 && bs > 1024 ? 1024 : 0;
      for (const f of differingFields(ba.subarray(off, off + 1024), bb.subarray(off, off + 1024), SUPERBLOCK_FIELDS, 'other superblock fields')) m.fields.add(f);
    }
    metadata.set(key, m);
  }
  // Data, directory, extent and xattr blocks: ask both images who owns them.
  const [ownA, ownB] = await settleAll([blockInodes(a, dataBlocks), blockInodes(b, dataBlocks)]);
  let unowned = 0;
  const ownerOf = new Map<number, number>();
  for (const block of dataBlocks) {
    const owners = new Set([ownA.get(block), ownB.get(block)].filter((x): x is number => x !== undefined));
    if (owners.size === 0) unowned++;
    for (const ino of owners) {
      inodeOf(ino).blocks++;
      ownerOf.set(block, ino);
    }
  }
  const numbers = [...inodes.keys()].sort((x, y) => x - y);
  const [pathsA, pathsB] = await settleAll([inodePaths(a, numbers), inodePaths(b, numbers)]);
  pathsA.set(2, ['/']); // ncheck never names the root directory

  // What reads back differently (mtime included), to name entries in manifest terms.
  const [ma, mb] = await settleAll([readImageManifest(a, { hash: true }), readImageManifest(b, { hash: true })]);
  const deltas = diffManifests(ma, mb, { compareMtime: true });
  const deltasByPath = new Map<string, string[]>();
  for (const d of deltas) {
    const text = d.code === 'missing' || d.code === 'extra' ? `only in build ${d.code === 'missing' ? 1 : 2}` : `${d.field ?? d.code} ${showValue(d, d.expected)} vs ${showValue(d, d.actual)}`;
    deltasByPath.set(d.path, [...(deltasByPath.get(d.path) ?? []), text]);
  }

  const first = cmp.firstOffset ?? 0;
  const firstBlock = Math.floor(first / bs);
  const hint = o.seeded === false ? ' Builds without both --seed UUID and SOURCE_DATE_EPOCH are never reproducible: the UUID, hash seed and time stamps change.' : '';
  findings.unshift({
    code: 'reproducible-mismatch', field: 'sha256', expected: cmp.sha256A, actual: cmp.sha256B,
    message: `the two builds differ: first differing byte at offset ${first} (block ${firstBlock}: ${describeOffset(layout, first, ownerOf, pathsA)}); ` +
      `${cmp.blockCount} blocks differ${cmp.blockCount > cmp.blocks.length ? ` (the first ${cmp.blocks.length} examined)` : ''}; ` +
      `sha256 ${cmp.sha256A.slice(0, 16)}… vs ${cmp.sha256B.slice(0, 16)}….${hint}`,
  });
  for (const [kind, m] of metadata) {
    const groups = [...m.groups];
    const name = ROLE_NAME[kind] ?? kind;
    findings.push({
      code: 'reproducible-metadata', field: kind,
      message: `${name} (group${groups.length > 1 ? 's' : ''} ${groups.slice(0, 8).join(', ')}${groups.length > 8 ? ', ...' : ''}) ${groups.length > 1 || name.endsWith('s') ? 'differ' : 'differs'}` +
        (m.fields.size ? `: ${[...m.fields].join(', ')}` : ''),
    });
  }
  const what = (d: InodeDiff) => [d.fields.size ? [...d.fields].join(', ') : '', d.blocks ? `${d.blocks} block${d.blocks > 1 ? 's' : ''}` : '']
    .filter(Boolean).join('; ');
  // Inodes without a path (the journal, the resize inode, reserved ones) in one finding.
  const unnamed = numbers.filter((ino) => !(pathsA.get(ino) ?? pathsB.get(ino)));
  if (unnamed.length) {
    findings.push({
      code: 'reproducible-metadata', field: 'inodes',
      message: `inodes without a path differ: ${unnamed.map((ino) => `${ino}${RESERVED_INODES[ino] ? ` (${RESERVED_INODES[ino]})` : ''}: ${what(inodes.get(ino)!)}`).join('; ')}`,
    });
  }
  const named = numbers.filter((ino) => !unnamed.includes(ino));
  const max = o.maxEntries ?? 50;
  for (const ino of named.slice(0, max)) {
    const paths = (pathsA.get(ino) ?? pathsB.get(ino))!;
    const readback = paths.flatMap((p) => deltasByPath.get(p) ?? []);
    findings.push({
      code: 'reproducible-entry', path: paths[0],
      message: `${paths.join(', ')} (inode ${ino}) differs: ${what(inodes.get(ino)!)}${readback.length ? `; reads back as ${readback.join(', ')}` : ''}`,
    });
  }
  if (named.length > max) findings.push({ code: 'reproducible-entry', message: `... and ${named.length - max} more entries differ` });
  if (unowned) findings.push({ code: 'reproducible-metadata', field: 'free blocks', message: `${unowned} differing blocks belong to no inode (free space)` });
  return findings;
}

const ROLE_NAME: Record<string, string> = {
  'superblock': 'superblock',
  'group-descriptors': 'group descriptors',
  'reserved-gdt': 'reserved GDT blocks',
  'block-bitmap': 'block bitmap',
  'inode-bitmap': 'inode bitmap',
};

/** "superblock of group 0, s_uuid" or "inode table of group 0, inode 17 /etc/os-release, i_mtime" or "a block of inode 17 /etc/os-release". */
function describeOffset(layout: ImageLayout, offset: number, ownerOf: Map<number, number>, paths: Map<number, string[]>): string {
  const bs = layout.blockSize;
  const block = Math.floor(offset / bs);
  const name = (i: number) => `${i} ${paths.get(i)?.[0] ?? RESERVED_INODES[i] ?? ''}`.trim();
  const role = blockRole(layout, block);
  if (role.kind === 'inode-table') {
    const within = offset % bs;
    const ino = role.firstInode + Math.floor(within / layout.inodeSize);
    return `inode table of group ${role.group}, inode ${name(ino)}, ${fieldAt(INODE_FIELDS, within % layout.inodeSize, 'in-inode xattrs')}`;
  }
  if (role.kind === 'superblock') {
    const within = (offset % bs) - (block === 0 && bs > 1024 ? 1024 : 0);
    const field = within >= 0 && within < 1024 ? `, ${fieldAt(SUPERBLOCK_FIELDS, within, 'other superblock fields')}` : ' (boot sector)';
    return `superblock of group ${role.group}${field}`;
  }
  if (role.kind !== 'other') return `${ROLE_NAME[role.kind]} of group ${role.group}`;
  const owner = ownerOf.get(block);
  return owner === undefined ? 'a block no inode owns' : `a block of inode ${name(owner)}`;
}
