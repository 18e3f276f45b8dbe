// cp from coreutils: a copy that keeps a file's holes (and shares its blocks
// where the filesystem can), which Node's copyFile does not.
import { run } from '../exec.js';

export async function copySparse(from: string, to: string): Promise<void> {
  await run('cp', ['--sparse=always', '--reflink=auto', '--', from, to]);
}
