// The host's static busybox, looked up where Debian puts it (the same list
// as src/demo/tree.ts). Without one the tests that need it fail, saying so.
import { existsSync } from 'node:fs';

export const BUSYBOX_CANDIDATES = ['/usr/bin/busybox', '/bin/busybox'];

export function hostBusybox(): string {
  const found = BUSYBOX_CANDIDATES.find((p) => existsSync(p));
  if (!found) {
    throw new Error(`no static busybox on this host (looked at ${BUSYBOX_CANDIDATES.join(', ')}): apt-get install busybox-static`);
  }
  return found;
}
