// A damaged VM image in the cache (issue 8, §3): truncated or with a flipped
// bit, it made every boot stage fail with exit 3 while doctor said the VM was
// fine. Now its size (always) and sha256 (when the file changed since the
// last good check) are compared with what the build recorded; doctor says
// "damaged: will be rebuilt", and the next use rebuilds it, saying so.
//
// The shared cache is never touched: its VM image is copied into a private
// PART_IMAGE_CACHE (building it first when this machine has none).
import { execa } from 'execa';
import { mkdtemp, open, readFile, rm, stat, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cachedVmImageState, ensureVmImage, vmCacheRoot } from '../../src/vm/image.js';
import { checkState } from '../../src/vm/state.js';
import { sha256Of } from '../../src/vm/cache.js';
import { runVm, savedStateKey } from '../../src/vm/run.js';
import { TAKE_STATE_MS } from '../../src/vm/restore.js';
import { existsSync } from 'node:fs';
import { Scope } from '../../src/cleanup.js';
import { readdir, writeFile } from 'node:fs/promises';
import { withStderr } from '../helpers/stderr.js';
import { runCliProcess as runCli } from '../helpers/cli.js'; // the KVM verdict and VM cache are per process

let priv: string;
let dir: string;
const saved = process.env.PART_IMAGE_CACHE;

async function flipByte(file: string, at: number): Promise<void> {
  const fh = await open(file, 'r+');
  try {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, at);
    b[0] ^= 0x01;
    await fh.write(b, 0, 1, at);
  } finally {
    await fh.close();
  }
}

async function doctorVmLine(): Promise<string> {
  const r = await runCli(['doctor'], { env: { PART_IMAGE_CACHE: priv, PART_IMAGE_ACCEL: 'tcg' } });
  return r.stdout.split('\n').find((l) => l.startsWith('VM image:')) ?? `(no VM image line)\n${r.stdout}\n${r.stderr}`;
}

beforeAll(async () => {
  // The shared cache's image (built by whoever came first), then a private copy.
  const shared = await ensureVmImage();
  // A run first, so that the shared cache has a saved VM state to copy as well.
  const s = new Scope();
  try {
    await runVm({ image: shared, scope: s, timeoutMs: 900_000, script: 'true' });
  } finally {
    await s.close();
  }
  priv = await mkdtemp(join(tmpdir(), 'pi-vmcache-'));
  dir = join(priv, `vm-${shared.hash}`);
  await execa('cp', ['-r', '--sparse=always', shared.dir, dir]);
  await rm(join(dir, 'checked.json'), { force: true });
  // Only the state this host restores: the shared cache may keep others (another CPU count, an older qemu).
  const key = await savedStateKey(shared);
  for (const name of await readdir(dir)) if (name.startsWith('state-') && name !== `state-${key}`) await rm(join(dir, name), { recursive: true, force: true });
  process.env.PART_IMAGE_CACHE = priv;
  expect(vmCacheRoot()).toBe(priv);
}, 1_200_000);

afterAll(async () => {
  if (saved === undefined) delete process.env.PART_IMAGE_CACHE;
  else process.env.PART_IMAGE_CACHE = saved;
  if (priv) await rm(priv, { recursive: true, force: true });
});

describe('a damaged saved VM state', () => {
  async function stateDirOf(): Promise<{ dir: string; key: string }> {
    const names = (await readdir(dir)).filter((n) => /^state-[0-9a-f]{16}$/.test(n));
    expect(names, 'the copied cache has one saved state').toHaveLength(1);
    return { dir: join(dir, names[0]), key: names[0].slice('state-'.length) };
  }

  it('a flipped bit in vm.state is found by its hash', async () => {
    const st = await stateDirOf();
    expect((await checkState(st.dir, st.key)).state).toBe('ok');
    const file = join(st.dir, 'vm.state');
    await flipByte(file, 1_000_000);
    const c = await checkState(st.dir, st.key);
    expect(c.state === 'damaged' && c.why).toMatch(/vm\.state has sha256 .* but was saved with/);
    await flipByte(file, 1_000_000);
    expect((await checkState(st.dir, st.key)).state).toBe('ok');
  });

  it('a state that qemu cannot load is thrown away with one log line, saved anew, and the job still runs', async () => {
    const st = await stateDirOf();
    // Cut short, with its size and hash recorded as if it had been saved so: only the restore can tell.
    const file = join(st.dir, 'vm.state');
    await truncate(file, 4 * 1024 * 1024);
    const meta = JSON.parse(await readFile(join(st.dir, 'meta.json'), 'utf8'));
    meta.files['vm.state'] = { size: (await stat(file)).size, sha256: await sha256Of(file) };
    await writeFile(join(st.dir, 'meta.json'), JSON.stringify(meta));
    await rm(join(st.dir, 'checked.json'), { force: true });
    expect((await checkState(st.dir, st.key)).state).toBe('ok');

    const image = await ensureVmImage();
    expect(image.dir).toBe(dir);
    const scope = new Scope();
    try {
      const t = Date.now();
      const { value: r, text } = await withStderr(() => runVm({ image, scope, timeoutMs: 900_000, script: 'echo ran > "$PI_OUT/ran"' }));
      console.log(`restore of a broken state, new state, job: ${Date.now() - t} ms (${r.boot})`);
      expect(text.match(/did not restore/g), text).toHaveLength(1);
      expect(text).toMatch(/VM: the saved VM state .*state-[0-9a-f]{16} did not restore \(.*\): throwing it away and saving a new one/);
      expect(r.boot).toBe('restore');
      expect(r.exitCode).toBe(0);
      expect(r.files.get('ran')?.toString()).toBe('ran\n');
    } finally {
      await scope.close();
    }
    // The new state is whole.
    expect((await checkState(st.dir, st.key)).state).toBe('ok');
    expect((await stat(file)).size).toBeGreaterThan(64 * 1024 * 1024);
  }, 1_200_000);
});

describe('a qemu that stops answering while it restores', () => {
  it('is killed once TAKE_STATE_MS have passed, and the same state (not thrown away) runs the job on a second try', async () => {
    const names = (await readdir(dir)).filter((n) => /^state-[0-9a-f]{16}$/.test(n));
    expect(names).toHaveLength(1);
    const stateDir = join(dir, names[0]);
    const before = JSON.parse(await readFile(join(stateDir, 'meta.json'), 'utf8')).savedAt;
    const image = await ensureVmImage();
    // The first qemu that loads a state of this private cache is stopped (SIGSTOP) as soon as it
    // appears: its QMP socket still takes connections, but nothing answers, as in the restore that once hung.
    let stopped = 0;
    let watching = true;
    const stopper = (async () => {
      while (watching && !stopped) {
        for (const name of await readdir('/proc')) {
          if (!/^\d+$/.test(name)) continue;
          const cmd = await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '');
          if (cmd.startsWith('qemu-system-x86_64\0') && cmd.includes('\0-incoming\0') && cmd.includes(priv)) {
            process.kill(Number(name), 'SIGSTOP');
            stopped = Number(name);
            break;
          }
        }
        if (!stopped) await new Promise((r) => setTimeout(r, 10));
      }
    })();
    const scope = new Scope();
    try {
      const t = Date.now();
      const { value: r, text } = await withStderr(() => runVm({ image, scope, timeoutMs: 900_000, script: 'echo ran > "$PI_OUT/ran"' }));
      const took = Date.now() - t;
      console.log(`restore with a stalled qemu, then again: ${took} ms (${r.boot})`);
      expect(stopped, 'a restoring qemu was found and stopped').toBeGreaterThan(0);
      expect(text.match(/stalled/g), text).toHaveLength(1);
      expect(text).toMatch(
        new RegExp(`VM: restoring the saved VM state .*${names[0]} stalled \\(qemu did not take the saved state within ${TAKE_STATE_MS / 1000} s and stopped answering; it was killed\\): trying it once more`),
      );
      expect(text).not.toMatch(/did not restore|booting the VM once to save/);
      expect(r.boot).toBe('restore');
      expect(r.exitCode).toBe(0);
      expect(r.files.get('ran')?.toString()).toBe('ran\n');
      expect(took).toBeGreaterThanOrEqual(TAKE_STATE_MS);
      // The stopped qemu was killed (and reaped), not left behind.
      expect(existsSync(`/proc/${stopped}`)).toBe(false);
    } finally {
      watching = false;
      await stopper;
      if (stopped && existsSync(`/proc/${stopped}`)) process.kill(stopped, 'SIGKILL');
      await scope.close();
    }
    // The same state, kept.
    expect(JSON.parse(await readFile(join(stateDir, 'meta.json'), 'utf8')).savedAt).toBe(before);
    expect((await checkState(stateDir, names[0].slice('state-'.length))).state).toBe('ok');
  }, 1_200_000);
});

describe('a damaged cached VM image', () => {
  it('a good copy is accepted, and its sizes and hashes are recorded', async () => {
    expect((await cachedVmImageState()).state).toBe('ok');
    const meta = JSON.parse(await readFile(join(dir, 'meta.json'), 'utf8'));
    expect(Object.keys(meta.files).sort()).toEqual(['initrd.img', 'root.img', 'vmlinuz']);
    expect(meta.files['root.img'].size).toBe((await stat(join(dir, 'root.img'))).size);
    expect(await doctorVmLine()).toBe('VM image:        cached');
  });

  it('a flipped bit in root.img (same size) is found by its hash; doctor says it will be rebuilt', async () => {
    const root = join(dir, 'root.img');
    const middle = Math.floor((await stat(root)).size / 2);
    await flipByte(root, middle);
    const s = await cachedVmImageState();
    expect(s.state).toBe('damaged');
    expect(s.state === 'damaged' && s.why).toMatch(/root\.img has sha256 .* but was built with/);
    expect(await doctorVmLine()).toMatch(/^VM image: +cached VM image damaged: will be rebuilt on first use \(root\.img has sha256/);
    // Flipped back: the same bytes as built, so the hash matches again.
    await flipByte(root, middle);
    expect((await cachedVmImageState()).state).toBe('ok');
  });

  it('a flipped bit in the kernel is found too', async () => {
    const kernel = join(dir, 'vmlinuz');
    await flipByte(kernel, 4096);
    const s = await cachedVmImageState();
    expect(s.state === 'damaged' && s.why).toMatch(/vmlinuz has sha256/);
    await flipByte(kernel, 4096);
    expect((await cachedVmImageState()).state).toBe('ok');
  });

  it('a truncated root.img is found by its size, and the next use rebuilds it, saying so', async () => {
    const root = join(dir, 'root.img');
    const size = (await stat(root)).size;
    await truncate(root, size - 4096);
    const s = await cachedVmImageState();
    expect(s.state === 'damaged' && s.why).toMatch(new RegExp(`root\\.img is ${size - 4096} bytes, but was built with ${size} \\(truncated\\?\\)`));
    expect(await doctorVmLine()).toMatch(/cached VM image damaged: will be rebuilt/);

    const { value: image, text: rebuildLog } = await withStderr(() => ensureVmImage());
    expect(image.built).toBe(true);
    expect(rebuildLog).toMatch(/VM: the cached VM image .* is damaged \(root\.img is \d+ bytes, but was built with \d+ \(truncated\?\)\): rebuilding it/);
    expect((await cachedVmImageState()).state).toBe('ok');
    expect(await doctorVmLine()).toBe('VM image:        cached');
  }, 1_200_000);
});
