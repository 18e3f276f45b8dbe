// The built-in example: a tiny portable-service root, written as a pax tar in
// process, so that it carries uid 0, a device node and a file capability
// without root. Its only binary is the host's static busybox.
import { createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import tarStream from 'tar-stream';
import { EnvironmentError } from '../errors.js';

export const DEMO_NAME = 'demo';
const BUSYBOX_PATHS = ['/usr/bin/busybox', '/bin/busybox'];
/** security.capability v2 for cap_net_raw=ep, as setcap writes it. */
const CAP_NET_RAW = Buffer.from('0100000200200000000000000000000000000000', 'hex');
const MTIME = new Date(1_700_000_000 * 1000);

export const DEMO_UNIT = `[Unit]
Description=part-image demo portable service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/busybox sh -c 'echo hello from the part-image demo'

[Install]
WantedBy=multi-user.target
`;

const OS_RELEASE = `ID=part-image-demo
NAME="part-image demo"
VERSION_ID=1.0
PRETTY_NAME="part-image demo 1.0"
PORTABLE_PRETTY_NAME="part-image demo service"
`;

async function findBusybox(): Promise<Buffer> {
  for (const p of BUSYBOX_PATHS) {
    const data = await readFile(p).catch(() => undefined);
    if (data) return data;
  }
  throw new EnvironmentError('the demo needs a static busybox and none was found', 'Install it: apt-get install busybox-static');
}

/** Writes the demo root tree as a tar archive to `path`. */
export async function writeDemoTar(path: string): Promise<void> {
  const busybox = await findBusybox();
  const pack = tarStream.pack();
  const base = { uid: 0, gid: 0, mtime: MTIME };
  const dirs: [string, number][] = [
    ['dev', 0o755], ['etc', 0o755], ['proc', 0o555], ['run', 0o755], ['sys', 0o555], ['tmp', 0o1777],
    ['usr', 0o755], ['usr/bin', 0o755], ['usr/lib', 0o755], ['usr/lib/systemd', 0o755], ['usr/lib/systemd/system', 0o755],
    ['var', 0o755], ['var/tmp', 0o1777], ['srv', 0o755], ['srv/www', 0o2775],
  ];
  const add = (header: Partial<tarStream.Header> & { name: string }, body: Buffer | string = '') =>
    new Promise<void>((resolve, reject) => pack.entry({ ...base, ...header }, body, (err) => (err ? reject(err) : resolve())));
  const done = pipeline(pack, createWriteStream(path));
  await add({ name: './', type: 'directory', mode: 0o755 });
  for (const [name, mode] of dirs) await add({ name: `./${name}/`, type: 'directory', mode });
  await add({ name: './usr/bin/busybox', type: 'file', mode: 0o755 }, busybox);
  await add({ name: './usr/bin/sh', type: 'symlink', linkname: 'busybox', mode: 0o777 });
  await add({ name: './usr/bin/ping', type: 'link', linkname: './usr/bin/busybox', mode: 0o755 });
  await add({ name: './bin', type: 'symlink', linkname: 'usr/bin', mode: 0o777 });
  await add({ name: './usr/bin/netcheck', type: 'file', mode: 0o755, pax: { 'SCHILY.xattr.security.capability': CAP_NET_RAW.toString('latin1') } },
    '#!/usr/bin/busybox sh\nexec /usr/bin/busybox ping -c1 127.0.0.1\n');
  await add({ name: './usr/bin/su-helper', type: 'file', mode: 0o4755 }, '#!/usr/bin/busybox sh\necho setuid helper\n');
  await add({ name: './dev/null', type: 'character-device', mode: 0o666, devmajor: 1, devminor: 3 });
  await add({ name: './etc/os-release', type: 'file', mode: 0o644 }, OS_RELEASE);
  await add({ name: './etc/resolv.conf', type: 'file', mode: 0o644 }, '');
  await add({ name: './etc/machine-id', type: 'file', mode: 0o444 }, '');
  await add({ name: './srv/www/index.html', type: 'file', mode: 0o644, uid: 33, gid: 33, pax: { 'SCHILY.xattr.user.origin': 'part-image demo' } },
    '<h1>hello from the part-image demo</h1>\n');
  await add({ name: `./usr/lib/systemd/system/${DEMO_NAME}.service`, type: 'file', mode: 0o644 }, DEMO_UNIT);
  pack.finalize();
  await done;
}
