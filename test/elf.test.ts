// The ELF reader on real host binaries, cross-checked with binutils' readelf.
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { ElfError, hostElfMachine, isElf, parseElf, parseElfHeader, parseShebang } from '../src/boot/elf.js';
import { hostBusybox } from './helpers/busybox.js';

const tmp = await mkdtemp(join(tmpdir(), 'part-image-elf-'));
afterAll(() => rm(tmp, { recursive: true, force: true }));

async function readelfDynamic(path: string) {
  const { stdout } = await execa('readelf', ['-d', '-l', '-W', path]);
  const needed = [...stdout.matchAll(/\(NEEDED\)\s+Shared library: \[(.*)\]/g)].map((m) => m[1]);
  const runpath = /\(RUNPATH\)\s+Library runpath: \[(.*)\]/.exec(stdout)?.[1];
  const rpath = /\(RPATH\)\s+Library rpath: \[(.*)\]/.exec(stdout)?.[1];
  const soname = /\(SONAME\)\s+Library soname: \[(.*)\]/.exec(stdout)?.[1];
  const interp = /\[Requesting program interpreter: (.*)\]/.exec(stdout)?.[1];
  return { needed, runpath, rpath, soname, interp };
}

describe('parseElf on host binaries', () => {
  it('reads /usr/bin/ls: x86_64, its loader and libraries', async () => {
    const info = parseElf(await readFile('/usr/bin/ls'));
    expect(info.elfClass).toBe(64);
    expect(info.endian).toBe('le');
    expect(info.machine).toBe(62);
    expect(info.machineName).toBe('x86_64');
    expect(hostElfMachine()).toBe(62);
    expect(info.interpreter).toBe('/lib64/ld-linux-x86-64.so.2');
    expect(info.needed).toContain('libc.so.6');
    expect(info.isStatic).toBe(false);
    const ref = await readelfDynamic('/usr/bin/ls');
    expect(info.needed).toEqual(ref.needed);
  });

  it('agrees with readelf on NEEDED, RUNPATH, RPATH, SONAME and PT_INTERP', async () => {
    const files = [
      '/usr/bin/ls',
      '/usr/bin/bash',
      '/lib/systemd/systemd',
      '/usr/bin/systemd-nspawn',
      '/lib/x86_64-linux-gnu/libc.so.6',
      '/lib64/ld-linux-x86-64.so.2',
      '/usr/sbin/debugfs',
    ];
    for (const f of files) {
      const info = parseElf(await readFile(f));
      const ref = await readelfDynamic(f);
      expect(info.needed, f).toEqual(ref.needed);
      expect(info.runpath.join(':') || undefined, f).toBe(ref.runpath);
      expect(info.rpath.join(':') || undefined, f).toBe(ref.rpath);
      expect(info.soname, f).toBe(ref.soname);
      expect(info.interpreter, f).toBe(ref.interp);
    }
    // systemd has a RUNPATH: the reason the diagnosis must honour it.
    expect(parseElf(await readFile('/lib/systemd/systemd')).runpath).toEqual(['/usr/lib/x86_64-linux-gnu/systemd']);
  });

  it('sees a static binary (busybox-static) as static', async () => {
    const info = parseElf(await readFile(hostBusybox()));
    expect(info.isStatic).toBe(true);
    expect(info.interpreter).toBeUndefined();
    expect(info.needed).toEqual([]);
  });

  it('reads a patched e_machine (wrong architecture) from a copy of ls', async () => {
    const copy = join(tmp, 'ls-arm64');
    await copyFile('/usr/bin/ls', copy);
    const buf = await readFile(copy);
    buf.writeUInt16LE(183, 18);
    await writeFile(copy, buf);
    const info = parseElf(await readFile(copy));
    expect(info.machine).toBe(183);
    expect(info.machineName).toBe('aarch64');
    // readelf agrees that it is now an AArch64 file.
    const { stdout } = await execa('readelf', ['-h', copy]);
    expect(stdout).toMatch(/Machine:\s+AArch64/);
    // Everything else is still readable.
    expect(info.interpreter).toBe('/lib64/ld-linux-x86-64.so.2');
  });

  it('parses a hand-made 32-bit big-endian header', () => {
    const buf = Buffer.alloc(52);
    ELF_MAGIC_WRITE(buf);
    buf[4] = 1; // ELFCLASS32
    buf[5] = 2; // big endian
    buf[6] = 1;
    buf.writeUInt16BE(2, 16); // ET_EXEC
    buf.writeUInt16BE(8, 18); // MIPS
    const h = parseElfHeader(buf);
    expect(h).toMatchObject({ elfClass: 32, endian: 'be', type: 'exec', machine: 8, machineName: 'mips', phnum: 0 });
    expect(parseElf(buf).needed).toEqual([]);
  });

  it('refuses what is not ELF, or truncated', async () => {
    expect(isElf(Buffer.from('#!/bin/sh\n'))).toBe(false);
    expect(() => parseElf(Buffer.from('#!/bin/sh\n'))).toThrow(ElfError);
    const ls = await readFile('/usr/bin/ls');
    expect(() => parseElf(ls.subarray(0, 40))).toThrow(/truncated/);
    expect(() => parseElf(ls.subarray(0, 200))).toThrow(/truncated/);
  });

  it('parses #! lines', () => {
    expect(parseShebang(Buffer.from('#!/bin/sh -e\necho\n'))).toEqual({ interpreter: '/bin/sh', arg: '-e' });
    expect(parseShebang(Buffer.from('#! /usr/bin/env python3\n'))).toEqual({ interpreter: '/usr/bin/env', arg: 'python3' });
    expect(parseShebang(Buffer.from('\x7fELF'))).toBeUndefined();
  });
});

function ELF_MAGIC_WRITE(buf: Buffer): void {
  buf.set([0x7f, 0x45, 0x4c, 0x46], 0);
}
