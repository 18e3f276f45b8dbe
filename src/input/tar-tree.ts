// The tree a tar archive describes, built entry by entry: every member name is
// resolved against the entries seen so far, and a name that would leave the
// root is refused.
import type { ManifestEntry } from '../types.js';
import { InputError } from '../errors.js';
import { INODE_BYTES } from '../manifest/apparent-size.js';
import type { AclKind } from '../manifest/acl.js';

export const BLOCK = 512;
/** What one entry costs in an image besides its data: its inode. */
export const INODE_COST = INODE_BYTES;
const FS_BLOCK = 4096;
export const UNSAFE_HINT =
  'The archive would write outside the tree. Re-create it from inside the root (tar -C ROOT -cf ARCHIVE .), or find out where it came from.';

// ---------------------------------------------------------------------------
// The tree being read

export interface Inode {
  id: number;
  blob: string;
  size: number;
  sha256?: string;
  mode: number;
  uid: number;
  gid: number;
  mtime?: number;
  xattrs: Record<string, string>;
  /** ACL texts to convert at the end (see Node.aclText). */
  aclText?: Partial<Record<AclKind, string>>;
  /** Paths that currently name this inode; the blob is dropped when it reaches 0. */
  refs: number;
}

export interface Node {
  /** For everything but regular files: the whole entry. For files: path and type only. */
  entry: ManifestEntry;
  inode?: Inode;
  implicit?: boolean;
  /** ACL texts whose names must be resolved once /etc/passwd and /etc/group are read. */
  aclText?: Partial<Record<AclKind, string>>;
  /** The member name as written in the archive, for messages. */
  member: string;
}

export class TarTree {
  readonly nodes = new Map<string, Node>();
  /**
   * The apparent size of the tree so far, in bytes: regular files by their
   * full size (holes included) in 4 KiB blocks, once per hardlink group; a
   * block per directory and per symlink of 60 bytes or more; 256 bytes of
   * inode per entry. The early SIZE_MB refusal compares it with the image.
   */
  bytes = 0;

  static fileCost(size: number): number {
    return Math.ceil(size / FS_BLOCK) * FS_BLOCK;
  }

  private static cost(node: Node): number {
    const e = node.entry;
    if (e.type === 'dir') return INODE_COST + FS_BLOCK;
    if (e.type === 'symlink' && (e.size ?? 0) >= 60) return INODE_COST + FS_BLOCK;
    return INODE_COST;
  }
  private children = new Map<string, Set<string>>();
  private blobsToDrop: string[] = [];

  constructor() {
    // Archives without a "./" entry still have a root.
    this.nodes.set('/', { entry: dirEntry('/'), implicit: true, member: '.' });
  }

  /**
   * Resolves a member name to its manifest path. A leading "/" is taken as
   * relative to the root, as GNU tar does. Refuses a ".." above the root and
   * any path whose traversal passes through a symlink or a non-directory that
   * the archive defined earlier (e.g. "link -> /etc" then "link/passwd").
   */
  resolve(member: string, label = `tar entry ${JSON.stringify(member)}`): string {
    if (member.includes('\0')) throw new InputError(`${label} has a NUL byte in its name`, 'The archive is corrupt or hostile; re-create it.');
    if (member.includes('\n')) {
      throw new InputError(`${label} has a newline in its name`, 'Rename the file in the source tree and re-create the archive; part-image refuses such names.');
    }
    if (member.includes('\uFFFD')) {
      throw new InputError(`${label} has a name that is not valid UTF-8`, 'Rename the file to a UTF-8 name and re-create the archive.');
    }
    const stack: string[] = [];
    const parts = member.split('/').filter((p) => p !== '' && p !== '.');
    // Every component but the last is traversed: it must be a directory (or
    // not exist yet). The deepest paths traversed (before each "..", and the
    // parent) are checked, with all they lie under: checking every prefix of
    // every member made a tar 1,500 folders deep take 21 s.
    for (const part of parts) {
      if (part !== '..') {
        stack.push(part);
        continue;
      }
      if (stack.length === 0) throw new InputError(`unsafe ${label}: its ".." leads outside the root`, UNSAFE_HINT);
      this.checkTraversed('/' + stack.join('/'), label);
      stack.pop();
    }
    if (parts.length && parts[parts.length - 1] !== '..' && stack.length > 1) this.checkTraversed('/' + stack.slice(0, -1).join('/'), label);
    return stack.length === 0 ? '/' : '/' + stack.join('/');
  }

  /**
   * Refuses `path` when it, or a folder it lies under, is something other than
   * a directory. Every node's parents are in the tree (ensureParents), and a
   * non-directory has nothing under it (put), so the deepest of them that
   * exists is the only one that can be: found walking up from `path`, in one
   * lookup when `path` itself exists.
   */
  private checkTraversed(path: string, label: string): void {
    let here = path;
    let node = this.nodes.get(here);
    while (!node && here !== '/') {
      here = this.parentOf(here);
      node = this.nodes.get(here);
    }
    if (node?.entry.type === 'symlink') {
      throw new InputError(
        `unsafe ${label}: it goes through the symlink ${here} -> ${node.entry.target} defined earlier in the archive`,
        UNSAFE_HINT,
      );
    }
    if (node && node.entry.type !== 'dir') {
      throw new InputError(`${label}: ${here} is a ${node.entry.type}, not a directory, earlier in the archive`, 'The archive is inconsistent; re-create it.');
    }
  }

  /** Creates missing parents of `path` implicitly, as directories 0755 0:0 (tar does the same on extraction). */
  private ensureParents(path: string): void {
    // The missing ones, from the parent up to the first that exists (every node's parents do).
    const missing: string[] = [];
    for (let p = this.parentOf(path); p !== '/' && !this.nodes.has(p); p = this.parentOf(p)) missing.push(p);
    for (let i = missing.length - 1; i >= 0; i--) {
      const cur = missing[i];
      this.nodes.set(cur, { entry: dirEntry(cur), implicit: true, member: cur });
      this.bytes += INODE_COST + FS_BLOCK;
      this.link(this.parentOf(cur), cur);
    }
  }

  private link(parent: string, path: string): void {
    let set = this.children.get(parent);
    if (!set) this.children.set(parent, (set = new Set()));
    set.add(path);
  }

  private parentOf(path: string): string {
    const i = path.lastIndexOf('/');
    return i <= 0 ? '/' : path.slice(0, i);
  }

  /** Drops `path` (and, for a directory, everything below it). */
  private remove(path: string): void {
    const node = this.nodes.get(path);
    if (!node) return;
    const kids = this.children.get(path);
    if (kids) {
      for (const kid of [...kids]) this.remove(kid);
      this.children.delete(path);
    }
    if (node.inode && --node.inode.refs === 0) {
      this.blobsToDrop.push(node.inode.blob);
      this.bytes -= TarTree.fileCost(node.inode.size);
    }
    this.bytes -= TarTree.cost(node);
    this.nodes.delete(path);
    this.children.get(this.parentOf(path))?.delete(path);
  }

  /**
   * Adds or replaces `path`. Two entries of one path (tar -r appends newer
   * versions): a directory over a directory merges (the later one's fields,
   * the children of both); anything else replaces the earlier entry, the later
   * one wins as on extraction, and `replaced` records it for the read stage's
   * notes. Refused: a non-directory over a directory that holds entries, which
   * would silently drop them (GNU tar fails there too: "Cannot unlink:
   * Directory not empty").
   */
  put(path: string, node: Node): void {
    const old = this.nodes.get(path);
    if (path === '/') {
      if (node.entry.type !== 'dir') {
        throw new InputError(`tar entry ${JSON.stringify(node.member)} is the root but is a ${node.entry.type}`, 'The root of the archive must be a directory.');
      }
      this.nodes.set('/', node);
      return;
    }
    if (old && old.entry.type === 'dir' && node.entry.type === 'dir') {
      this.nodes.set(path, node); // a directory listed twice keeps its children
      return;
    }
    // A new file's data counts once; a hard link (refs > 1) shares it.
    if (node.inode?.refs === 1) this.bytes += TarTree.fileCost(node.inode.size);
    if (old) {
      const kids = this.children.get(path);
      if (old.entry.type === 'dir' && kids && kids.size > 0) {
        const kid = this.nodes.get([...kids].sort()[0])!;
        const first = old.implicit ? `the directory ${path} (implied by tar entry ${JSON.stringify(kid.member)})` : `tar entry ${JSON.stringify(old.member)}, a directory holding ${JSON.stringify(kid.member)}`;
        throw new InputError(
          `tar entry ${JSON.stringify(node.member)} (a ${node.entry.type}) has the same path ${path} as ${first}: extracting it would drop ${kids.size === 1 ? 'that entry' : `those ${kids.size} entries`}`,
          'Remove one of the two members (GNU tar refuses this too: "Cannot unlink: Directory not empty"); re-create the archive from one tree.',
        );
      }
      this.replaced.push({ path, earlier: old.member, later: node.member });
      this.remove(path);
    }
    this.ensureParents(path);
    this.nodes.set(path, node);
    this.bytes += TarTree.cost(node);
    this.link(this.parentOf(path), path);
  }

  /** Entries replaced by a later one of the same path, in archive order. */
  readonly replaced: { path: string; earlier: string; later: string }[] = [];

  takeBlobsToDrop(): string[] {
    const b = this.blobsToDrop;
    this.blobsToDrop = [];
    return b;
  }
}

export function dirEntry(path: string): ManifestEntry {
  return { path, type: 'dir', mode: '0755', uid: 0, gid: 0 };
}

