// qemu-img: format conversion, the byte-for-byte check of the result, and
// the facts `qemu-img info` gives about an image given to part-image.
//
// Images given to part-image are opened with their format named (-f, or the
// driver in a json: spec), never probed, and a qcow2 with `backing: null`:
// even a file changed after image/foreign-refs.ts checked it cannot make
// qemu-img read its backing file.
import { resolve } from 'node:path';
import { run } from '../exec.js';
import { EnvironmentError, InputError, ToolError } from '../errors.js';
import type { ForeignReference } from '../types.js';

/** The formats `qemu-img convert -O` writes that an image can be asked for in (OUTPUT_FORMAT, --format). */
export const WRITABLE_FORMATS = ['raw', 'qcow2', 'qcow', 'qed', 'vdi', 'vhdx', 'vmdk', 'vpc'] as const;
export type WritableFormat = (typeof WRITABLE_FORMATS)[number];

export function formatListHint(): string {
  return `Use one of: ${WRITABLE_FORMATS.join(', ')} (the formats qemu-img writes; --format or OUTPUT_FORMAT).`;
}

export function buildConvertArgs(raw: string, out: string, format: string): string[] {
  return ['convert', '-q', '-f', 'raw', '-O', format, raw, out];
}

export async function qemuImgConvert(raw: string, out: string, format: string): Promise<void> {
  await run('qemu-img', buildConvertArgs(raw, out, format));
}

/**
 * The source of a conversion to raw: a json: spec that names the driver and
 * the file, and for qcow2 `backing: null`, so that qemu opens no backing file
 * whatever the header says.
 */
export function buildToRawArgs(image: string, format: 'qcow2' | 'vmdk', raw: string): string[] {
  const spec: Record<string, unknown> = { driver: format, file: { driver: 'file', filename: resolve(image) } };
  if (format === 'qcow2') spec.backing = null;
  return ['convert', '-q', '-O', 'raw', `json:${JSON.stringify(spec)}`, raw];
}

export async function qemuImgToRaw(image: string, format: 'qcow2' | 'vmdk', raw: string): Promise<void> {
  try {
    await run('qemu-img', buildToRawArgs(image, format, raw));
  } catch (err) {
    if (!(err instanceof ToolError)) throw err;
    if (/No space left on device|Disk quota exceeded/.test(err.stderr)) {
      throw new EnvironmentError(`no space left for the raw copy of ${image}: ${lastLine(err.stderr)}`, 'Free space in $TMPDIR, or point TMPDIR at a bigger folder.');
    }
    throw new InputError(`${image} cannot be read as ${format}: ${lastLine(err.stderr)}`,
      `Check it with \`qemu-img check -f ${format} ${image}\`; a damaged ${format} file cannot be verified.`, err);
  }
}

function lastLine(text: string): string {
  return text.trim().split('\n').pop()?.replace(/^qemu-img: /, '') ?? '';
}

export interface CompareResult {
  identical: boolean;
  message: string;
}

/** qemu-img compare exits 0 when the guest-visible contents are identical, 1 when they differ. */
export async function qemuImgCompare(raw: string, other: string, format: string): Promise<CompareResult> {
  const r = await run('qemu-img', ['compare', '-f', 'raw', '-F', format, raw, other], { okCodes: [0, 1] });
  return { identical: r.exitCode === 0, message: (r.stdout + r.stderr).trim() };
}

export interface ImageInfo {
  format: string;
  virtualSize: number;
  /** backing-filename as the image spells it (a path, or a json: spec). */
  backingFilename?: string;
  fullBackingFilename?: string;
  /** format-specific data-file (qcow2). */
  dataFile?: string;
  /** format-specific extents' file names (vmdk). */
  extentFiles: string[];
  encrypted: boolean;
}

export function buildInfoArgs(image: string, format: string): string[] {
  return ['info', '--output=json', '-f', format, image];
}

interface InfoJson {
  format: string;
  'virtual-size': number;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  encrypted?: boolean;
  'format-specific'?: { type?: string; data?: { 'data-file'?: string; extents?: { filename?: string }[] } };
}

export function parseQemuImgInfo(json: string): ImageInfo {
  const j = JSON.parse(json) as InfoJson;
  const data = j['format-specific']?.data;
  return {
    format: j.format,
    virtualSize: j['virtual-size'],
    backingFilename: j['backing-filename'],
    fullBackingFilename: j['full-backing-filename'],
    dataFile: data?.['data-file'],
    extentFiles: (data?.extents ?? []).map((e) => e.filename ?? '').filter((f) => f !== ''),
    encrypted: j.encrypted === true,
  };
}

/** What `qemu-img info` says `image` refers to outside itself (the second opinion on image/foreign-refs.ts). */
export function infoReferences(info: ImageInfo, image: string): ForeignReference[] {
  const out: ForeignReference[] = [];
  if (info.backingFilename !== undefined) out.push({ kind: 'backing file', target: info.backingFilename });
  else if (info.fullBackingFilename !== undefined) out.push({ kind: 'backing file', target: info.fullBackingFilename });
  if (info.dataFile !== undefined) out.push({ kind: 'external data file', target: info.dataFile });
  const self = resolve(image);
  for (const f of info.extentFiles) if (resolve(f) !== self) out.push({ kind: 'extent', target: f });
  return out;
}

/**
 * `qemu-img info` with the format named. Call it only on a file that
 * image/foreign-refs.ts found self-contained: for a vmdk descriptor,
 * qemu-img info itself opens every extent.
 */
export async function qemuImgInfo(image: string, format: string): Promise<ImageInfo> {
  try {
    return parseQemuImgInfo((await run('qemu-img', buildInfoArgs(image, format))).stdout);
  } catch (err) {
    if (!(err instanceof ToolError)) throw err;
    throw new InputError(`${image} cannot be read as ${format}: ${lastLine(err.stderr)}`, `Check it with \`qemu-img check -f ${format} ${image}\`.`, err);
  }
}

/** `qemu-img create` of a qcow2 whose reads fall through to `backing` (an absolute path) and whose writes stay in `out`. Pure. */
export function buildOverlayArgs(backing: string, backingFormat: 'raw' | 'qcow2', out: string): string[] {
  return ['create', '-q', '-f', 'qcow2', '-F', backingFormat, '-b', resolve(backing), out];
}

export async function qemuImgOverlay(backing: string, backingFormat: 'raw' | 'qcow2', out: string): Promise<void> {
  await run('qemu-img', buildOverlayArgs(backing, backingFormat, out));
}
