// A small ELF reader: the header, the program headers, and from the dynamic
// section the DT_NEEDED/DT_RUNPATH/DT_RPATH/DT_SONAME strings. Enough to tell
// whether an image's init (or an exec-mode command) can be loaded: the right
// machine, an interpreter that exists, libraries that exist.
// Pure: works on a Buffer, never touches the filesystem.

export const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);

/** e_machine values worth naming (elf.h). */
export const ELF_MACHINES: Record<number, string> = {
  2: 'sparc',
  3: 'i386',
  8: 'mips',
  20: 'ppc',
  21: 'ppc64',
  22: 's390x',
  40: 'arm',
  43: 'sparc64',
  62: 'x86_64',
  183: 'aarch64',
  243: 'riscv',
  258: 'loongarch',
};

const ET_NAMES: Record<number, ElfInfo['type']> = { 1: 'rel', 2: 'exec', 3: 'dyn', 4: 'core' };

const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const PT_INTERP = 3;

const DT_NULL = 0;
const DT_NEEDED = 1;
const DT_STRTAB = 5;
const DT_STRSZ = 10;
const DT_SONAME = 14;
const DT_RPATH = 15;
const DT_RUNPATH = 29;

export interface ProgramHeader {
  type: number;
  flags: number;
  offset: number;
  vaddr: number;
  filesz: number;
  memsz: number;
}

export interface ElfInfo {
  elfClass: 32 | 64;
  endian: 'le' | 'be';
  type: 'rel' | 'exec' | 'dyn' | 'core' | 'unknown';
  /** e_machine, e.g. 62 for x86_64. */
  machine: number;
  /** A readable name for `machine`, e.g. "x86_64", or "machine 1234". */
  machineName: string;
  programHeaders: ProgramHeader[];
  /** PT_INTERP: the dynamic loader, e.g. /lib64/ld-linux-x86-64.so.2. Absent for static binaries. */
  interpreter?: string;
  /** DT_NEEDED, in order. */
  needed: string[];
  /** DT_RUNPATH, split on ':'. */
  runpath: string[];
  /** DT_RPATH, split on ':'. */
  rpath: string[];
  soname?: string;
  /** True when the file has no PT_INTERP and no PT_DYNAMIC (fully static). */
  isStatic: boolean;
}

export class ElfError extends Error {}

export function isElf(buf: Buffer): boolean {
  return buf.length >= 4 && buf.subarray(0, 4).equals(ELF_MAGIC);
}

export function machineName(machine: number): string {
  return ELF_MACHINES[machine] ?? `machine ${machine}`;
}

/** The e_machine of programs that run natively on this host, from process.arch. */
export function hostElfMachine(arch: string = process.arch): number {
  const map: Record<string, number> = {
    x64: 62,
    ia32: 3,
    arm64: 183,
    arm: 40,
    ppc64: 21,
    s390x: 22,
    riscv64: 243,
    loong64: 258,
    mips: 8,
    mipsel: 8,
  };
  const m = map[arch];
  if (m === undefined) throw new ElfError(`unknown host architecture ${arch}`);
  return m;
}

/** The ELF class of native programs on this host (64 on x86_64). */
export function hostElfClass(arch: string = process.arch): 32 | 64 {
  return ['x64', 'arm64', 'ppc64', 's390x', 'riscv64', 'loong64'].includes(arch) ? 64 : 32;
}

/** Parse the ELF header only (needs the first 64 bytes). */
export function parseElfHeader(buf: Buffer): Pick<ElfInfo, 'elfClass' | 'endian' | 'type' | 'machine' | 'machineName'> & {
  phoff: number;
  phentsize: number;
  phnum: number;
} {
  if (!isElf(buf)) throw new ElfError('not an ELF file (bad magic)');
  if (buf.length < 52) throw new ElfError('truncated ELF header');
  const cls = buf[4];
  const data = buf[5];
  if (cls !== 1 && cls !== 2) throw new ElfError(`bad ELF class ${cls}`);
  if (data !== 1 && data !== 2) throw new ElfError(`bad ELF data encoding ${data}`);
  const elfClass = cls === 1 ? 32 : 64;
  const le = data === 1;
  if (elfClass === 64 && buf.length < 64) throw new ElfError('truncated ELF header');
  const u16 = (o: number) => (le ? buf.readUInt16LE(o) : buf.readUInt16BE(o));
  const u32 = (o: number) => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const u64 = (o: number) => Number(le ? buf.readBigUInt64LE(o) : buf.readBigUInt64BE(o));
  const etype = u16(16);
  const machine = u16(18);
  const phoff = elfClass === 64 ? u64(32) : u32(28);
  const phentsize = elfClass === 64 ? u16(54) : u16(42);
  const phnum = elfClass === 64 ? u16(56) : u16(44);
  return {
    elfClass,
    endian: le ? 'le' : 'be',
    type: ET_NAMES[etype] ?? 'unknown',
    machine,
    machineName: machineName(machine),
    phoff,
    phentsize,
    phnum,
  };
}

/** Parse an ELF file: header, program headers, interpreter and dynamic strings. */
export function parseElf(buf: Buffer): ElfInfo {
  const h = parseElfHeader(buf);
  const le = h.endian === 'le';
  const is64 = h.elfClass === 64;
  const u32 = (o: number) => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const u64 = (o: number) => Number(le ? buf.readBigUInt64LE(o) : buf.readBigUInt64BE(o));
  const word = (o: number) => (is64 ? u64(o) : u32(o));
  const need = (off: number, len: number, what: string) => {
    if (off < 0 || off + len > buf.length) throw new ElfError(`truncated ELF file: ${what} at ${off}+${len} beyond ${buf.length} bytes`);
  };

  const programHeaders: ProgramHeader[] = [];
  const minEnt = is64 ? 56 : 32;
  if (h.phnum > 0 && h.phentsize < minEnt) throw new ElfError(`bad program header size ${h.phentsize}`);
  for (let i = 0; i < h.phnum; i++) {
    const o = h.phoff + i * h.phentsize;
    need(o, minEnt, 'program header');
    programHeaders.push(
      is64
        ? { type: u32(o), flags: u32(o + 4), offset: u64(o + 8), vaddr: u64(o + 16), filesz: u64(o + 32), memsz: u64(o + 40) }
        : { type: u32(o), offset: u32(o + 4), vaddr: u32(o + 8), filesz: u32(o + 16), memsz: u32(o + 20), flags: u32(o + 24) },
    );
  }

  const cstring = (off: number, end = buf.length): string => {
    need(off, 0, 'string');
    let e = off;
    while (e < end && buf[e] !== 0) e++;
    return buf.toString('latin1', off, e);
  };

  let interpreter: string | undefined;
  const interp = programHeaders.find((p) => p.type === PT_INTERP);
  if (interp) {
    need(interp.offset, interp.filesz, 'PT_INTERP');
    interpreter = cstring(interp.offset, interp.offset + interp.filesz);
  }

  const info: ElfInfo = {
    elfClass: h.elfClass,
    endian: h.endian,
    type: h.type,
    machine: h.machine,
    machineName: h.machineName,
    programHeaders,
    interpreter,
    needed: [],
    runpath: [],
    rpath: [],
    isStatic: false,
  };

  const dyn = programHeaders.find((p) => p.type === PT_DYNAMIC);
  info.isStatic = !interp && !dyn;
  if (!dyn) return info;
  need(dyn.offset, dyn.filesz, 'PT_DYNAMIC');
  const entSize = is64 ? 16 : 8;
  const tags: { tag: number; val: number }[] = [];
  for (let o = dyn.offset; o + entSize <= dyn.offset + dyn.filesz; o += entSize) {
    const tag = word(o);
    const val = word(o + entSize / 2);
    if (tag === DT_NULL) break;
    tags.push({ tag, val });
  }
  const strtabAddr = tags.find((t) => t.tag === DT_STRTAB)?.val;
  const strsz = tags.find((t) => t.tag === DT_STRSZ)?.val;
  if (strtabAddr === undefined) return info;
  const strtabOff = vaddrToOffset(programHeaders, strtabAddr);
  if (strtabOff === undefined) throw new ElfError(`DT_STRTAB address 0x${strtabAddr.toString(16)} is in no PT_LOAD segment`);
  const strEnd = strsz !== undefined ? Math.min(buf.length, strtabOff + strsz) : buf.length;
  const str = (v: number) => cstring(strtabOff + v, strEnd);
  for (const { tag, val } of tags) {
    if (tag === DT_NEEDED) info.needed.push(str(val));
    else if (tag === DT_RUNPATH) info.runpath.push(...str(val).split(':').filter(Boolean));
    else if (tag === DT_RPATH) info.rpath.push(...str(val).split(':').filter(Boolean));
    else if (tag === DT_SONAME) info.soname = str(val);
  }
  return info;
}

/** Map a virtual address to a file offset through the PT_LOAD segments. */
export function vaddrToOffset(phs: readonly ProgramHeader[], vaddr: number): number | undefined {
  for (const p of phs) {
    if (p.type !== PT_LOAD) continue;
    if (vaddr >= p.vaddr && vaddr < p.vaddr + p.filesz) return p.offset + (vaddr - p.vaddr);
  }
  return undefined;
}

/** For a `#!` script: the interpreter path and its argument, or undefined. */
export function parseShebang(buf: Buffer): { interpreter: string; arg?: string } | undefined {
  if (buf.length < 3 || buf[0] !== 0x23 || buf[1] !== 0x21) return undefined;
  const nl = buf.indexOf(0x0a);
  const line = buf.toString('latin1', 2, nl < 0 ? Math.min(buf.length, 256) : nl).trim();
  if (!line) return undefined;
  const m = /^(\S+)(?:\s+(.*))?$/.exec(line);
  if (!m) return undefined;
  return { interpreter: m[1], arg: m[2]?.trim() || undefined };
}
