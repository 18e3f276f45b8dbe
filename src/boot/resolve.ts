// Resolve a path inside an image the way the kernel would inside the
// container: absolute symlink targets start again at the image root, never at
// the host's. Works over a manifest (rootless, from the image itself) or over
// a directory (a mounted image), through one small lookup interface.
//
// Escapes: a relative target whose `..` climbs above the image root is
// refused (reason 'escape') by default. The kernel would clamp it at the root
// inside a chroot, but on the host side (a mount point, a bind) such a link
// points outside the image, so part-image treats it as broken. Pass
// { escape: 'clamp' } for kernel semantics.
import { lstatSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { EntryType, Manifest, ManifestEntry } from '../types.js';

export interface LookupEntry {
  type: EntryType;
  target?: string;
  mode?: string;
  size?: number;
}

/** Returns what is at an absolute, normalized image path ("/usr/bin"), or undefined. */
export type Lookup = (path: string) => LookupEntry | undefined;

export type ResolveFailure = 'missing' | 'dangling' | 'loop' | 'escape' | 'not-dir';

export type Resolved =
  | { ok: true; path: string; entry: LookupEntry; links: string[] }
  | {
      ok: false;
      reason: ResolveFailure;
      /** The image path where resolution stopped (the missing component, or the offending link). */
      at: string;
      /** Symlinks followed on the way, in order (link path -> target). */
      links: string[];
      message: string;
    };

export interface ResolveOptions {
  /** Follow a symlink in the last component (default true). */
  followLast?: boolean;
  /** Refuse (default) or clamp `..` above the image root. */
  escape?: 'refuse' | 'clamp';
  /** Symlinks to follow before giving up (default 40, as Linux). */
  maxLinks?: number;
}

/** A map-backed lookup over a manifest. Build once, resolve many times. */
export function manifestLookup(manifest: Manifest): Lookup {
  const index = new Map<string, ManifestEntry>();
  for (const e of manifest.entries) index.set(e.path, e);
  return (p) => index.get(p);
}

/** A lookup over a directory on the host (a mounted image): lstat and readlink, never following. */
export function treeLookup(root: string): Lookup {
  return (p) => {
    const host = join(root, p);
    try {
      const st = lstatSync(host);
      const type: EntryType = st.isDirectory()
        ? 'dir'
        : st.isSymbolicLink()
          ? 'symlink'
          : st.isFile()
            ? 'file'
            : st.isCharacterDevice()
              ? 'char'
              : st.isBlockDevice()
                ? 'block'
                : st.isFIFO()
                  ? 'fifo'
                  : 'socket';
      return {
        type,
        mode: (st.mode & 0o7777).toString(8).padStart(4, '0'),
        size: st.size,
        target: type === 'symlink' ? readlinkSync(host, 'utf8') : undefined,
      };
    } catch {
      return undefined;
    }
  };
}

function split(p: string): string[] {
  return p.split('/').filter((c) => c !== '' && c !== '.');
}

function joinComponents(parts: readonly string[]): string {
  return '/' + parts.join('/');
}

/** Resolve `path` (absolute inside the image) following symlinks inside the image. */
export function resolvePath(lookup: Lookup, path: string, opts: ResolveOptions = {}): Resolved {
  const followLast = opts.followLast ?? true;
  const clamp = opts.escape === 'clamp';
  const maxLinks = opts.maxLinks ?? 40;
  const links: string[] = [];
  const fail = (reason: ResolveFailure, at: string, message: string): Resolved => ({ ok: false, reason, at, links, message });

  let done: string[] = [];
  // Each pending component remembers the link whose target it came from, so
  // that a `..` above the root is blamed on that link.
  let todo: { name: string; from?: string }[] = split(path).map((name) => ({ name }));
  let followed = 0;
  while (todo.length) {
    const { name, from } = todo.shift()!;
    if (name === '..') {
      if (done.length === 0) {
        if (!clamp && from !== undefined) return fail('escape', from, `symlink ${links.find((l) => l.startsWith(`${from} -> `)) ?? from} climbs above the image root`);
        continue;
      }
      done.pop();
      continue;
    }
    const here = joinComponents([...done, name]);
    const entry = lookup(here);
    if (!entry) {
      // Dangling: the missing name came from a symlink's target (not from the path asked for).
      if (from !== undefined) return fail('dangling', here, `${here} does not exist (reached through ${links.join(', ')})`);
      return fail('missing', here, `${here} does not exist`);
    }
    const last = todo.length === 0;
    if (entry.type === 'symlink' && (!last || followLast)) {
      if (++followed > maxLinks) return fail('loop', here, `too many levels of symbolic links at ${here}`);
      const target = entry.target ?? '';
      links.push(`${here} -> ${target}`);
      if (target.startsWith('/')) done = [];
      todo = [...split(target).map((n) => ({ name: n, from: here })), ...todo];
      continue;
    }
    if (!last && entry.type !== 'dir') return fail('not-dir', here, `${here} is a ${entry.type}, not a directory`);
    done.push(name);
    if (last) return { ok: true, path: here, entry, links };
  }
  const root = joinComponents(done);
  const entry = lookup(root) ?? (root === '/' ? { type: 'dir' as const } : undefined);
  if (!entry) return fail('missing', root, `${root} does not exist`);
  return { ok: true, path: root, entry, links };
}
