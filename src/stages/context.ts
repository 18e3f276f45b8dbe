// What every verification stage receives, and the shape of a stage.
import type { Finding, InputTree, Manifest, StageResult } from '../types.js';
import type { Scope } from '../cleanup.js';
import { readImageManifest } from '../image/debugfs-reader.js';
import { UnreadableImageError } from '../errors.js';
import type { ImageRole, RoleDecision } from '../boot/role.js';

export interface VerifyOptions {
  /** Stages the user asked to skip (--skip). */
  skip: ReadonlySet<string>;
  /** Compare mtimes in the diff stage (--compare-mtime). */
  compareMtime: boolean;
  /** Free MiB the filesystem must keep; undefined when SIZE_MB was given (then free space is only reported). */
  requiredFreeMb?: number;
  /** Golden manifest file (--golden), and whether to write it (--update-golden). */
  golden?: string;
  updateGolden?: boolean;
  /** File with allowed golden differences (--golden-allow). */
  goldenAllow?: string;
  /** Build a second time and compare the images byte for byte (--check-reproducible, build only). */
  checkReproducible?: boolean;
  /** Boot stages. */
  bootTimeoutMs: number;
  /** --boot-stall: a boot whose jobs did not change for this long is a hang (default boot/boot-watch.ts). */
  bootStallMs?: number;
  /** --allow-full: a read-write root with next to no free space is no finding. */
  allowFull?: boolean;
  allowFailedUnits: string[];
  nspawnCommand?: string[];
  /** The portable stage must run (--portable). */
  portable: boolean;
  /** --role (or PART_IMAGE_ROLE): root, portable or data; detected when absent (boot/role.ts). */
  role?: ImageRole;
}

export interface StageContext {
  /** The raw image under test. */
  image: string;
  /** The name the image will have once accepted (portable services use its prefix). */
  imageName: string;
  /** The input the image was built from; absent for `boot`. */
  input?: InputTree;
  /** Filled by the readback stage; later stages read it. */
  imageManifest?: Manifest;
  /** The image read without content hashes, by the first stage that needed no more (readback skipped): kept for the next. */
  imageManifestUnhashed?: Manifest;
  /** Set when the image could not be read (readback, or the first stage that tried): later stages do not read it again. */
  imageUnreadable?: UnreadableImageError;
  /** Builds the same input again into `dest` (only `build` gives it; the reproducible stage uses it). */
  rebuild?: {
    into(dest: string): Promise<void>;
    /** Both --seed and SOURCE_DATE_EPOCH were given: without them no two builds can be identical. */
    seeded: boolean;
  };
  opts: VerifyOptions;
  scope: Scope;
  /** The image's role, once a boot stage decided it (stages/role.ts). */
  role?: RoleDecision;
  /** Work that may only happen once every stage passed (writing a golden file); the pipeline runs it. */
  onAccepted?: (() => Promise<void>)[];
}

/** What a stage's run() returns; the runner adds name and duration. */
export interface StageOutcome {
  status: StageResult['status'];
  reason?: string;
  skippedBy?: StageResult['skippedBy'];
  findings: Finding[];
  /** Reported, never a rejection (StageResult.warnings). */
  warnings?: Finding[];
  details?: Record<string, unknown>;
}

/**
 * A stage's options as data (osbuild's model: each stage an options schema):
 * a JSON schema of the VerifyOptions fields the stage reads, checked with ajv
 * before it runs (stages/options.ts). Sets are checked as arrays.
 */
export interface StageOptionsSchema {
  type: 'object';
  properties: { [K in keyof VerifyOptions]?: Record<string, unknown> };
  required?: readonly (keyof VerifyOptions)[];
  additionalProperties: false;
  /** Rules between fields (if/then, dependencies). */
  [keyword: string]: unknown;
}

export interface Stage {
  name: string;
  /** One line for doctor and --help. */
  summary: string;
  /** The host tools it runs (doctor checks them). */
  tools: readonly string[];
  /** Where it runs: anywhere rootless, a boot (host root or the VM), a portable attach (systemd PID 1 or the VM). */
  runs: 'rootless' | 'boot' | 'portable';
  /** The options it reads, as a JSON schema. */
  options: StageOptionsSchema;
  run(ctx: StageContext): Promise<StageOutcome>;
}

/** What doctor and --help know of a step: its name, what it does, its host tools, where it runs. */
export type StageDeclaration = Pick<Stage, 'name' | 'summary' | 'tools' | 'runs'>;

export function passedOrFailed(findings: Finding[], details?: Record<string, unknown>): StageOutcome {
  return { status: findings.length ? 'failed' : 'passed', findings, details };
}

export function skipped(reason: string, skippedBy: StageResult['skippedBy']): StageOutcome {
  return { status: 'skipped', reason, skippedBy, findings: [] };
}

/**
 * The image's manifest: the readback stage's, or read now when readback was
 * skipped. A read with hashes is kept for the stages after this one.
 */
export async function imageManifestOf(ctx: StageContext, opts: { hash: boolean }): Promise<Manifest> {
  if (ctx.imageManifest) return ctx.imageManifest;
  if (!opts.hash && ctx.imageManifestUnhashed) return ctx.imageManifestUnhashed;
  if (ctx.imageUnreadable) throw ctx.imageUnreadable;
  const manifest = await readImageManifest(ctx.image, { hash: opts.hash, name: ctx.imageName }).catch((err: unknown) => {
    if (err instanceof UnreadableImageError) ctx.imageUnreadable = err;
    throw err;
  });
  if (opts.hash) ctx.imageManifest = manifest;
  else ctx.imageManifestUnhashed = manifest;
  return manifest;
}
