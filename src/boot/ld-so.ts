// The ld.so search of the boot diagnosis: PT_INTERP and the DT_NEEDED closure
// of one ELF program, looked up the way ld.so would look for each library:
// DT_RPATH (inherited by what a library loads), DT_RUNPATH ($ORIGIN, $LIB,
// $PLATFORM expanded), ld.so.conf(.d) with its includes, the multiarch and
// default directories; a candidate of another machine or class is skipped, as
// ld.so skips it. Pure: it reads the image through a Lookup and a FileReader.
import type { Finding, Manifest } from '../types.js';
import { machineName, isElf, parseElf, type ElfInfo } from './elf.js';
import { resolvePath, type Lookup, type Resolved } from './resolve.js';
import type { FileReader } from './read-files.js';
import { describeFailure } from './unresolved.js';

const MULTIARCH: Record<number, string> = {
  62: 'x86_64-linux-gnu',
  3: 'i386-linux-gnu',
  183: 'aarch64-linux-gnu',
  40: 'arm-linux-gnueabihf',
  21: 'powerpc64le-linux-gnu',
  22: 's390x-linux-gnu',
  243: 'riscv64-linux-gnu',
};

/** Look up a library name the way ld.so does; returns the candidate paths that exist, in order. */
function libraryCandidates(lookup: Lookup, name: string, dirs: readonly string[]): string[] {
  const found: string[] = [];
  for (const d of dirs) {
    const p = d === '/' ? `/${name}` : `${d.replace(/\/+$/, '')}/${name}`;
    const r = resolvePath(lookup, p);
    if (r.ok && r.entry.type === 'file' && !found.includes(r.path)) found.push(r.path);
  }
  return found;
}

function expandDst(dir: string, origin: string, elf: ElfInfo): string[] {
  const multiarch = MULTIARCH[elf.machine];
  const libs = elf.elfClass === 64 ? ['lib64', ...(multiarch ? [`lib/${multiarch}`] : []), 'lib'] : ['lib', ...(multiarch ? [`lib/${multiarch}`] : [])];
  let out = [dir.replace(/\$\{ORIGIN\}|\$ORIGIN(?![A-Za-z0-9_])/g, origin)];
  if (/\$\{?LIB\}?/.test(dir)) out = out.flatMap((d) => libs.map((l) => d.replace(/\$\{LIB\}|\$LIB(?![A-Za-z0-9_])/g, l)));
  if (/\$\{?PLATFORM\}?/.test(dir)) out = out.map((d) => d.replace(/\$\{PLATFORM\}|\$PLATFORM(?![A-Za-z0-9_])/g, machineName(elf.machine)));
  return out.filter((d) => d.startsWith('/'));
}

/** ld.so.conf(.d) directories, with `include` globs of the form DIR/*.conf expanded against the manifest. */
async function ldSoConfDirs(manifest: Manifest, lookup: Lookup, read: FileReader): Promise<string[]> {
  const dirs: string[] = [];
  const seen = new Set<string>();
  let queue = ['/etc/ld.so.conf'];
  for (let depth = 0; queue.length && depth < 4; depth++) {
    const resolved = queue
      .map((p) => resolvePath(lookup, p))
      .filter((r): r is Extract<Resolved, { ok: true }> => r.ok && r.entry.type === 'file')
      .map((r) => r.path)
      .filter((p) => !seen.has(p));
    resolved.forEach((p) => seen.add(p));
    const bytes = await read(resolved);
    const next: string[] = [];
    for (const p of resolved) {
      const text = bytes.get(p)?.toString('utf8') ?? '';
      for (const raw of text.split('\n')) {
        const line = raw.replace(/#.*/, '').trim();
        if (!line) continue;
        const inc = /^include\s+(.+)$/.exec(line);
        if (inc) {
          for (const pattern of inc[1].split(/\s+/)) next.push(...globManifest(manifest, pattern.startsWith('/') ? pattern : `/etc/${pattern}`));
          continue;
        }
        if (line.startsWith('hwcap')) continue;
        for (const d of line.split(/[:\s,]+/)) if (d.startsWith('/')) dirs.push(d);
      }
    }
    queue = next;
  }
  return dirs;
}

function globManifest(manifest: Manifest, pattern: string): string[] {
  const esc = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]');
  const re = new RegExp(`^${esc}$`);
  return manifest.entries
    .map((e) => e.path)
    .filter((p) => re.test(p))
    .sort();
}

/** PT_INTERP and the DT_NEEDED closure of one ELF program. */
export async function checkDynamic(manifest: Manifest, lookup: Lookup, read: FileReader, program: string, elf: ElfInfo): Promise<Finding[]> {
  const findings: Finding[] = [];
  if (elf.interpreter) {
    const ir = resolvePath(lookup, elf.interpreter);
    if (!ir.ok || ir.entry.type !== 'file') {
      findings.push({
        code: 'missing-interpreter',
        path: program,
        message: `missing interpreter: ${program} needs the loader ${elf.interpreter}, which ${ir.ok ? `is a ${ir.entry.type}` : `is ${describeFailure(ir)}`} in the image; install libc6 in the root tree (or fix the usr-merge links)`,
        expected: elf.interpreter,
      });
    }
  }
  if (!elf.needed.length) return findings;

  const multiarch = MULTIARCH[elf.machine];
  const conf = await ldSoConfDirs(manifest, lookup, read);
  const defaults = [
    ...(multiarch ? [`/lib/${multiarch}`, `/usr/lib/${multiarch}`] : []),
    ...(elf.elfClass === 64 ? ['/lib64', '/usr/lib64'] : []),
    '/lib',
    '/usr/lib',
  ];
  const systemDirs = [...new Set([...conf, ...defaults])];

  interface Obj {
    path: string;
    elf: ElfInfo;
    /** DT_RPATH inherited from the objects that loaded it (ld.so searches the loaders' RPATHs). */
    inheritedRpath: string[];
  }
  interface Pending {
    name: string;
    by: Obj;
    candidates: string[];
    searched: string[];
    rejected: string[];
  }
  const loaded = new Map<string, string>(); // library name -> path that satisfied it
  const visited = new Set<string>([program]);
  const missing = new Map<string, Finding>();

  const origin = (o: Obj) => o.path.slice(0, o.path.lastIndexOf('/')) || '/';
  const searchDirs = (o: Obj): string[] => {
    const own = o.elf.runpath.length ? [] : o.elf.rpath;
    const rpath = [...own, ...(o.elf.runpath.length ? [] : o.inheritedRpath)].flatMap((d) => expandDst(d, origin(o), o.elf));
    const runpath = o.elf.runpath.flatMap((d) => expandDst(d, origin(o), o.elf));
    return [...new Set([...rpath, ...runpath, ...systemDirs])];
  };
  const pendingFor = (o: Obj): Pending[] =>
    o.elf.needed
      .filter((n) => !loaded.has(n))
      .map((name) => {
        const dirs = name.includes('/') ? ['/'] : searchDirs(o);
        const candidates = name.includes('/')
          ? [resolvePath(lookup, name.startsWith('/') ? name : `${origin(o)}/${name}`)].flatMap((r) => (r.ok && r.entry.type === 'file' ? [r.path] : []))
          : libraryCandidates(lookup, name, dirs);
        return { name, by: o, candidates, searched: dirs, rejected: [] };
      });
  let queue = pendingFor({ path: program, elf, inheritedRpath: [] });
  for (let round = 0; queue.length && round < 64; round++) {
    const want = [...new Set(queue.flatMap((p) => (p.candidates.length && !loaded.has(p.name) ? [p.candidates[0]] : [])))];
    const bytes = await read(want);
    const next: Pending[] = [];
    for (const p of queue) {
      if (loaded.has(p.name)) continue;
      const cand = p.candidates.shift();
      if (cand === undefined) {
        if (!missing.has(p.name)) {
          const rejected = p.rejected.length ? `; skipped as not ${p.by.elf.elfClass}-bit ${p.by.elf.machineName}: ${p.rejected.join(', ')}` : '';
          missing.set(p.name, {
            code: 'missing-library',
            path: p.by.path,
            message: `missing library: ${p.name}, needed by ${p.by.path}, is not in the image's library path (${p.searched.slice(0, 6).join(', ')}${p.searched.length > 6 ? ', ...' : ''})${rejected}; install the package that ships it in the root tree`,
            expected: p.name,
            actual: { searched: p.searched, rejected: p.rejected },
          });
        }
        continue;
      }
      const b = bytes.get(cand);
      let lib: ElfInfo | undefined;
      try {
        lib = b && isElf(b) ? parseElf(b) : undefined;
      } catch {
        lib = undefined;
      }
      if (!lib || lib.machine !== p.by.elf.machine || lib.elfClass !== p.by.elf.elfClass) {
        p.rejected.push(lib ? `${cand} (${lib.elfClass}-bit ${lib.machineName})` : `${cand} (not ELF)`);
        next.push(p);
        continue;
      }
      loaded.set(p.name, cand);
      if (visited.has(cand)) continue;
      visited.add(cand);
      const o: Obj = { path: cand, elf: lib, inheritedRpath: [...p.by.inheritedRpath, ...(p.by.elf.runpath.length ? [] : p.by.elf.rpath)] };
      next.push(...pendingFor(o));
    }
    queue = next;
  }
  findings.push(...missing.values());
  return findings;
}
