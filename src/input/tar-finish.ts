// The tar reader's helpers: member names and times from headers, stream and
// blob errors in words, ACL names from the archive's own /etc/passwd and
// /etc/group, and the finished InputTree (limits, hard links, notes).
import { readFile } from 'node:fs/promises';
import type { Header } from 'tar-stream';
import type { InputTree, ManifestEntry } from '../types.js';
import { EnvironmentError, InputError, InternalError, PartImageError } from '../errors.js';
import { formatMode, linkGroup, makeManifest } from '../manifest/entry.js';
import { AclError, aclTextToXattrHex, aclXattrName, type AclKind, type AclNameResolver } from '../manifest/acl.js';
import { checkTreeLimits } from './limits.js';
import { treeTooBig } from '../manifest/apparent-size.js';
import { strictUtf8 } from './tar-pax.js';
import { TarTree, type Inode } from './tar-tree.js';

const MiB = 1024 * 1024;

export function headerMtimeOf(h: Header): number | undefined {
  const t = h.mtime?.getTime();
  return t === undefined || Number.isNaN(t) ? undefined : Math.floor(t / 1000);
}

/** The early SIZE_MB refusal: the tree read so far already needs more than the image has. */
export function checkFits(bytes: number, maxBytes: number, member: string, entries: number): void {
  if (bytes > maxBytes) throw treeTooBig(bytes, maxBytes, `at tar entry ${JSON.stringify(member)} (entry ${entries})`);
}

/** A ustar/GNU name field (read as latin1 by tar-stream) decoded as strict UTF-8. */
export function decodeName(latin1: string, what: string, member?: string): string {
  const raw = Buffer.from(latin1, 'latin1');
  try {
    return strictUtf8.decode(raw);
  } catch {
    throw new InputError(`tar entry ${JSON.stringify(member ?? raw.toString('utf8'))}: its ${what} is not valid UTF-8`, 'Rename the file to a UTF-8 name and re-create the archive.');
  }
}

export async function drain(entry: AsyncIterable<Buffer>): Promise<void> {
  for await (const _ of entry) { /* skip */ }
}

export function describeStreamError(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (e?.code === 'Z_BUF_ERROR' || /unexpected end of file/i.test(e?.message ?? '')) return 'the gzip stream is truncated';
  if (e?.code?.startsWith?.('Z_')) return `bad gzip data (${e.message})`;
  if (/Unexpected end of data/.test(e?.message ?? '')) return 'it ends in the middle of an entry (truncated?)';
  if (/Invalid tar header/.test(e?.message ?? '')) return 'bad tar header checksum (corrupt, or not a tar)';
  if (/Header exceeds max size/.test(e?.message ?? '')) return 'a pax or GNU long-name header of more than 4 MiB (tar-stream\'s limit; no entry an image can hold needs one that large)';
  return e?.message ?? String(err);
}

export function blobError(err: unknown, staging: string): unknown {
  if (err instanceof PartImageError) return err;
  const e = err as NodeJS.ErrnoException;
  if (e?.code === 'ENOSPC' || e?.code === 'EDQUOT') {
    return new EnvironmentError(`no space left for the archive's contents in ${staging}`, 'Point TMPDIR at a larger filesystem.', err);
  }
  return err;
}

/** Builds a name resolver from the archive's own /etc/passwd and /etc/group. */
export async function archiveNameResolver(tree: TarTree, final: (blob: string) => string = (b) => b): Promise<AclNameResolver> {
  const table = async (path: string): Promise<Map<string, number>> => {
    const map = new Map<string, number>();
    const blob = tree.nodes.get(path)?.inode?.blob;
    if (!blob) return map;
    for (const line of (await readFile(final(blob), 'utf8')).split('\n')) {
      const f = line.split(':');
      if (f.length >= 3 && /^[0-9]+$/.test(f[2])) map.set(f[0], Number(f[2]));
    }
    return map;
  };
  const users = await table('/etc/passwd');
  const groups = await table('/etc/group');
  return (kind, name) => (kind === 'user' ? users : groups).get(name);
}

/** The InputTree of a read archive; `final` names where each staged blob is (tar-staging.ts's final()). */
export async function finish(
  source: string, tree: TarTree, hashing: boolean, notes: string[], limits: boolean, final: (blob: string) => string = (b) => b,
): Promise<InputTree> {
  const entries: ManifestEntry[] = [];
  const content = new Map<string, string>();
  // The paths of each file inode that more than one path names (refs), for its hard-link fields.
  const linked = new Map<number, ManifestEntry[]>();
  let resolver: AclNameResolver | undefined;
  let usedBytes = 0;

  for (const [p, node] of tree.nodes) {
    const ino = node.inode;
    let xattrs: Record<string, string> | undefined = ino ? ino.xattrs : node.entry.xattrs;
    const aclText = ino ? ino.aclText : node.aclText;
    if (aclText) {
      xattrs = { ...xattrs };
      for (const [kind, text] of Object.entries(aclText) as [AclKind, string][]) {
        if (xattrs[aclXattrName(kind)] !== undefined) continue;
        resolver ??= await archiveNameResolver(tree, final);
        try {
          const hex = aclTextToXattrHex(text, kind, resolver);
          if (hex !== undefined) xattrs[aclXattrName(kind)] = hex;
        } catch (err) {
          if (!(err instanceof AclError)) throw err;
          throw new InputError(`tar entry ${JSON.stringify(node.member)}: SCHILY.acl.${kind}: ${err.message}`,
            "Re-create the archive with GNU tar --xattrs --xattrs-include='*' (which stores the raw ACL) or with bsdtar --acls (which stores numeric ids).");
        }
      }
    }
    const hasXattrs = xattrs !== undefined && Object.keys(xattrs).length > 0;
    let e: ManifestEntry;
    if (ino) {
      // In the manifest's key order, so that makeManifest() keeps the object instead of copying it.
      e = { path: p, type: 'file', mode: formatMode(ino.mode), uid: ino.uid, gid: ino.gid, size: ino.size };
      if (hashing) {
        // Set by the reader or, for a small file staged in RAM, by the staging's thread before drain() returned.
        if (ino.sha256 === undefined) throw new InternalError(`tar entry ${JSON.stringify(node.member)} was read but not hashed`);
        e.sha256 = ino.sha256;
      }
      if (hasXattrs) e.xattrs = xattrs;
      if (ino.mtime !== undefined) e.mtime = ino.mtime;
      content.set(p, final(ino.blob));
      if (ino.refs > 1) {
        const paths = linked.get(ino.id);
        if (paths) paths.push(e);
        else {
          linked.set(ino.id, [e]);
          usedBytes += Math.ceil(ino.size / 4096) * 4096;
        }
      } else {
        usedBytes += Math.ceil(ino.size / 4096) * 4096;
      }
    } else {
      // The tree's own entry, unless its xattrs change (an empty set, or ACLs added).
      if (!('xattrs' in node.entry) && !hasXattrs) e = node.entry;
      else {
        const { xattrs: _, ...rest } = node.entry;
        e = hasXattrs ? { ...rest, xattrs } : rest;
      }
      if (e.type === 'dir') usedBytes += 4096;
      if (e.type === 'symlink' && (e.size ?? 0) >= 60) usedBytes += 4096;
    }
    entries.push(e);
  }
  for (const paths of linked.values()) if (paths.length >= 2) linkGroup(paths);
  const manifest = makeManifest(entries);
  if (limits) checkTreeLimits(manifest, source, (p) => `tar entry ${JSON.stringify(tree.nodes.get(p)?.member ?? p)}`);
  return {
    kind: 'tar',
    source,
    manifest,
    content,
    usedMb: Math.ceil(usedBytes / MiB),
    notes,
  };
}
