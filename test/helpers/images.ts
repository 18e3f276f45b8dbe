// Deliberate damage to real images, done with the real tools.
import { execa } from 'execa';

export async function debugfsWrite(image: string, request: string): Promise<void> {
  const r = await execa('debugfs', ['-w', '-R', request, image]);
  const errors = r.stderr.split('\n').filter((l) => l.trim() && !/^debugfs \d/.test(l));
  if (errors.length) throw new Error(`debugfs ${request}: ${errors.join('; ')}`);
}

/** Physical block numbers of a file or directory inside the image. */
export async function blocksOf(image: string, path: string): Promise<number[]> {
  const r = await execa('debugfs', ['-R', `blocks "${path}"`, image]);
  return r.stdout.trim().split(/\s+/).filter(Boolean).map(Number);
}

/** Overwrites the first bytes of a block in place (content or metadata damage). */
export async function overwriteBlock(image: string, block: number, bytes: Buffer, blockSize = 4096): Promise<void> {
  const { open } = await import('node:fs/promises');
  const fh = await open(image, 'r+');
  try {
    await fh.write(bytes, 0, bytes.length, block * blockSize);
  } finally {
    await fh.close();
  }
}

export async function loopDevices(): Promise<string> {
  const r = await execa('losetup', ['-a'], { reject: false });
  return r.stdout.trim();
}

export async function mountsUnder(prefix: string): Promise<string[]> {
  const { readFile } = await import('node:fs/promises');
  const text = await readFile('/proc/self/mounts', 'utf8');
  return text.split('\n').map((l) => l.split(' ')[1]).filter((m) => m && m.startsWith(prefix));
}
