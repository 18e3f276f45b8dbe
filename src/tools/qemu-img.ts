// qemu-img: format conversion and the byte-for-byte check of the result.
import { run } from '../exec.js';

export function buildConvertArgs(raw: string, out: string, format: string): string[] {
  return ['convert', '-q', '-f', 'raw', '-O', format, raw, out];
}

export async function qemuImgConvert(raw: string, out: string, format: string): Promise<void> {
  await run('qemu-img', buildConvertArgs(raw, out, format));
}

export async function qemuImgToRaw(image: string, format: string, raw: string): Promise<void> {
  await run('qemu-img', ['convert', '-q', '-f', format, '-O', 'raw', image, raw]);
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
}

export async function qemuImgInfo(image: string): Promise<ImageInfo> {
  const r = await run('qemu-img', ['info', '--output=json', image]);
  const j = JSON.parse(r.stdout) as { format: string; 'virtual-size': number };
  return { format: j.format, virtualSize: j['virtual-size'] };
}
