// Output formats: the raw image is verified first; a converted file is then
// checked against that raw image with `qemu-img compare` before acceptance.
// The list is every format `qemu-img convert -O` writes that Raptor's builder
// can ask for: its generate-part.sh passes OUTPUT_FORMAT straight to
// `qemu-img create -f` and `guestfish --format`.
import type { Finding } from '../types.js';
import { WRITABLE_FORMATS, qemuImgCompare, qemuImgConvert, type WritableFormat } from '../tools/qemu-img.js';
import { UsageError } from '../errors.js';
import { formatListHint } from '../tools/qemu-img.js';

export const OUTPUT_FORMATS = WRITABLE_FORMATS;
export type OutputFormat = WritableFormat;

export function parseFormat(value: string | undefined): OutputFormat {
  // Empty means raw, as in the seed builder's ${OUTPUT_FORMAT:-raw}.
  const v = (value || 'raw').toLowerCase();
  if ((OUTPUT_FORMATS as readonly string[]).includes(v)) return v as OutputFormat;
  throw new UsageError(`unknown output format "${value}"`, formatHint());
}

export function formatHint(): string {
  return formatListHint();
}

export async function convertImage(raw: string, out: string, format: Exclude<OutputFormat, 'raw'>): Promise<Finding[]> {
  await qemuImgConvert(raw, out, format);
  const cmp = await qemuImgCompare(raw, out, format);
  return cmp.identical ? [] : [{ code: 'convert-mismatch', message: `the ${format} file differs from the verified raw image: ${cmp.message}` }];
}
