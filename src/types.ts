// Shared types of part-image. Every module speaks in these.

export type EntryType = 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';

/**
 * One path of a tree, flat, with a stable key order (see manifest/entry.ts).
 * `path` is absolute inside the tree: "/" is the root, "/usr/bin/ping" a file.
 */
export interface ManifestEntry {
  path: string;
  type: EntryType;
  /** Permission bits plus setuid/setgid/sticky, as 4 octal digits: "0755", "4755". */
  mode: string;
  uid: number;
  gid: number;
  /** Bytes, for files and symlinks (length of the target). */
  size?: number;
  /** Lowercase hex sha256 of the content, files only. */
  sha256?: string;
  /** Symlink target, verbatim. */
  target?: string;
  /** "major,minor", char and block devices only. */
  rdev?: string;
  /** xattr name -> lowercase hex of the raw value. POSIX ACLs appear as system.posix_acl_*. */
  xattrs?: Record<string, string>;
  /** Number of links inside the tree, files only, when above 1. */
  nlink?: number;
  /** For every member of a hardlink group but the first (in path order): the group's first path. */
  hardlink?: string;
  /** Seconds since the epoch. Read always; compared only on request. */
  mtime?: number;
}

export interface Manifest {
  entries: ManifestEntry[];
}

/** Where the bytes of a regular file can be read on the host, keyed by manifest path. */
export type ContentMap = Map<string, string>;

/** An input read into the manifest model, plus what the builder needs to copy content. */
export interface InputTree {
  kind: 'dir' | 'tar' | 'layers' | 'image' | 'manifest';
  source: string;
  manifest: Manifest;
  content: ContentMap;
  /** Size of the input in MiB, as `du -sm` counts it. */
  usedMb: number;
  /**
   * What the reader did that the user should know, one line each, for the
   * read stage's details: leading "/" removed from member names, members
   * replaced by later ones of the same name, sockets left out.
   */
  notes?: string[];
  /** Where a tar's file contents were staged for the build (input/tar-staging.ts). */
  staged?: StagingCounts;
}

/** A tar's staged files: how many in RAM (and their bytes), how many on disk. */
export interface StagingCounts {
  ramFiles: number;
  ramBytes: number;
  diskFiles: number;
}

/**
 * passed/failed: the stage's verdict. skipped: it did not run (see skippedBy).
 * error: it stopped without a verdict, because the input was bad or because
 * of a bug in part-image; the report's `error` says which.
 */
export type StageStatus = 'passed' | 'failed' | 'skipped' | 'error';

export interface Finding {
  code: string;
  message: string;
  path?: string;
  field?: string;
  expected?: unknown;
  actual?: unknown;
}

export interface StageResult {
  name: string;
  status: StageStatus;
  /** Why a stage was skipped. */
  reason?: string;
  /** request: --skip; not-applicable: nothing to check; unavailable: could not run here (blocks acceptance). */
  skippedBy?: 'request' | 'not-applicable' | 'unavailable';
  durationMs: number;
  findings: Finding[];
  /** What the image gets away with here but would fail elsewhere (a kernel boot): reported, never a rejection. */
  warnings?: Finding[];
  /** Stage-specific facts worth keeping in the report (free MiB, fsck summary, ...). */
  details?: Record<string, unknown>;
}

export interface Report {
  tool: 'part-image';
  version: string;
  command: string;
  accepted: boolean;
  image?: string;
  output?: string;
  input?: string;
  /** The one-line cause of a rejection, when a stage can name it (boot diagnosis). */
  cause?: string;
  /** Set when the run ended with an error instead of a verdict (exit 2, 3, 4 or 130). */
  error?: ReportError;
  startedAt: string;
  durationMs: number;
  stages: StageResult[];
}

export interface ReportError {
  /** input: bad flags or input (exit 2); environment (3); internal: a bug in part-image (4); interrupted (130). */
  kind: 'input' | 'environment' | 'internal' | 'interrupted';
  exitCode: number;
  message: string;
  hint?: string;
  /** The stage that was running, when one was. */
  stage?: string;
  /** For internal errors: where in part-image's code it broke (stack frames). */
  where?: string;
}

/** A reference from a qcow2 or vmdk file to another file (image/foreign-refs.ts reads them, tools/qemu-img.ts cross-checks). */
export interface ForeignReference {
  /** backing file | external data file | extent | parent | descriptor */
  kind: string;
  /** The reference as the file spells it (a path, a json: spec, a descriptor line). */
  target: string;
}
