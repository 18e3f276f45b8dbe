// `part-image doctor` on this host (root, no systemd as PID 1), and on a host
// where every tool is missing (an empty PATH).
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { doctor, formatDoctor } from '../src/doctor.js';
import { decidePlace, forcedPlace, hostReasons, vmMissing, type HostFacts } from '../src/stages/where.js';

const tmp = await mkdtemp(join(tmpdir(), 'part-image-doctor-'));
afterAll(() => rm(tmp, { recursive: true, force: true }));

const STAGES = ['read', 'build', 'fsck', 'readback', 'diff', 'golden', 'freespace', 'diagnose', 'nspawn', 'portable-lint', 'portable', 'reproducible', 'convert'];

describe('doctor', () => {
  it('lists every stage with how it runs here, privileges, PID 1 and KVM', async () => {
    const started = Date.now();
    const r = await doctor();
    const ms = Date.now() - started;
    expect(r.stages.map((s) => s.name)).toEqual(STAGES);
    expect(r.root).toBe(process.getuid?.() === 0);
    const comm = (await readFile('/proc/1/comm', 'utf8')).trim();
    expect(r.pid1).toBe(comm);
    expect(r.systemdPid1).toBe(comm === 'systemd');
    expect(['usable', 'unusable', 'unknown']).toContain(r.kvm.status);
    expect(r.kvm.reason).toBeTruthy();
    // This machine type has every tool, runs as root, and has no systemd as PID 1.
    expect(r.tools.filter((t) => !t.present)).toEqual([]);
    const by = Object.fromEntries(r.stages.map((s) => [s.name, s]));
    for (const n of ['read', 'build', 'fsck', 'readback', 'diff', 'freespace', 'golden', 'diagnose', 'portable-lint', 'reproducible', 'convert']) {
      expect(by[n], n).toMatchObject({ canRun: true, how: 'rootless' });
    }
    expect(by.nspawn).toMatchObject({ canRun: true, how: 'host' });
    expect(by.portable).toMatchObject({ canRun: true, how: r.systemdPid1 ? 'host' : 'vm' });
    if (!r.systemdPid1) expect(by.portable.note).toMatch(/not systemd/);
    const text = formatDoctor(r);
    for (const n of STAGES) expect(text).toMatch(new RegExp(`^${n} +yes`, 'm'));
    expect(text).toContain(`PID 1:           ${comm}`);
    expect(text).toContain('all host tools present');
    // JSON is the object itself.
    expect(JSON.parse(JSON.stringify(r))).toEqual(r);
    console.log(`doctor: ${ms} ms\n${text}`);
  });

  it('says what to install when tools are missing', async () => {
    const path = process.env.PATH;
    process.env.PATH = join(tmp, 'empty');
    let r;
    try {
      r = await doctor({ probeKvm: false });
    } finally {
      process.env.PATH = path;
    }
    const by = Object.fromEntries(r.stages.map((s) => [s.name, s]));
    expect(by.fsck).toMatchObject({ canRun: false, missing: ['e2fsck'], hint: 'apt-get install e2fsprogs' });
    expect(by.convert).toMatchObject({ canRun: false, hint: 'apt-get install qemu-utils' });
    expect(by.diff).toMatchObject({ canRun: true, how: 'rootless' });
    expect(by.nspawn.canRun).toBe(false);
    expect(by.nspawn.hint).toContain('systemd-container');
    expect(by.nspawn.hint).toContain('qemu-system-x86');
    expect(by.portable.canRun).toBe(false);
    expect(r.kvm.status).toBe('unknown');
    const text = formatDoctor(r);
    expect(text).toMatch(/^fsck +NO/m);
    expect(text).toMatch(/^install: apt-get install .*e2fsprogs/m);
  });
});

describe('where a stage runs (stages/where.ts, shared by doctor and the nspawn stage)', () => {
  const rootNoSystemd: HostFacts = { root: true, pid1: 'bash', systemdPid1: false, loopControl: true };
  it('names why the host cannot run a stage', () => {
    expect(hostReasons('boot', rootNoSystemd, [])).toEqual([]);
    expect(hostReasons('portable', rootNoSystemd, [])).toEqual(['PID 1 is bash, not systemd (portablectl needs systemd-portabled)']);
    expect(hostReasons('boot', { ...rootNoSystemd, root: false, loopControl: false }, ['systemd-nspawn'])).toEqual(['not root', 'no /dev/loop-control', 'missing systemd-nspawn']);
    expect(hostReasons('rootless', { ...rootNoSystemd, root: false }, [])).toEqual([]);
    expect(vmMissing(true, () => false)).toEqual(['qemu-system-x86_64']);
    expect(vmMissing(false, (t) => t === 'qemu-system-x86_64')).toEqual(['mmdebstrap', 'mke2fs']);
  });

  it.each([
    ['the host when it can', 'boot', [], [], undefined, { where: 'host' }],
    ['else the VM', 'boot', ['not root'], [], undefined, { where: 'vm' }],
    ['neither', 'portable', ['not root'], ['qemu-system-x86_64'], undefined, { unavailable: true }],
    ['forced to the VM although the host can', 'boot', [], [], 'vm', { where: 'vm' }],
    ['forced to the VM, which cannot', 'boot', [], ['qemu-system-x86_64'], 'vm', { unavailable: true, forced: 'vm' }],
    ['forced to the host, which cannot: no fallback', 'boot', ['not root'], [], 'host', { unavailable: true, forced: 'host' }],
    ['rootless with its tools', 'rootless', [], ['qemu-system-x86_64'], undefined, { where: 'rootless' }],
    ['rootless without them: never the VM', 'rootless', ['missing e2fsck'], [], undefined, { unavailable: true }],
  ] as const)('decides: %s', (_what, runs, host, vm, forced, want) => {
    expect(decidePlace(runs, host, vm, forced)).toEqual(want);
  });

  it('reads PART_IMAGE_NSPAWN', () => {
    expect(forcedPlace({})).toEqual({ forced: undefined });
    expect(forcedPlace({ PART_IMAGE_NSPAWN: '' })).toEqual({ forced: undefined });
    expect(forcedPlace({ PART_IMAGE_NSPAWN: 'vm' })).toEqual({ forced: 'vm' });
    expect(forcedPlace({ PART_IMAGE_NSPAWN: 'cloud' })).toEqual({ invalid: "PART_IMAGE_NSPAWN must be 'host' or 'vm' (or unset), not 'cloud'" });
  });
});
