// debugfs (e2fsprogs) as a batch tool: one process runs a whole script given
// with -f (runDebugfs, runDebugfsFeed), or stays open in its command loop and
// runs batch after batch (DebugfsSession); pure parsers read what it prints
// (debugfs-ls.ts, -stat.ts, -xattr.ts, -icheck.ts; debugfs-text.ts decodes
// its bytes). Used to read images rootless (image/debugfs-reader.ts) and to
// write them (the builder's scripts).
//
// Facts about debugfs 1.47.0 this module relies on (checked in its source and
// by hand):
//
// Script files (-f FILE)
// - Every line is echoed as "debugfs: LINE\n" on stdout before it runs (one
//   space; the interactive prompt has two). stdout and stderr are unbuffered
//   in this mode, so with both on one file descriptor every error lands right
//   after the echo of the command that caused it. runDebugfs() does exactly
//   that and splits the output per command.
// - Lines are read with fgets(BUFSIZ=8192): a line of 8191 bytes or more is cut
//   and its tail runs as a second command. A "\r" ends the line early. A line
//   whose first byte is "#" is a comment; one starting with "!" runs a shell.
//   runDebugfs() refuses all of these.
// - The exit status is 0 even when commands fail (it counts only unknown
//   commands). Look at the sections' output for errors.
//
// Its command loop (no -f: commands on stdin; DebugfsSession)
// - Before it reads each line, debugfs prints the prompt "debugfs:  " (two
//   spaces, no newline) and flushes stdout; it echoes nothing. stdout is
//   otherwise fully buffered, so a command's output reaches the file in one
//   write or a few: -f mode writes every piece of every line on its own
//   (about 20 writes per stat; for a Debian root's stats 197,000 writes and
//   0.25 s of system time, against 11,000 writes and 0.03 s here).
// - stderr stays unbuffered: an error lands after the prompt of the command
//   that caused it (before that command's stdout) and before the next prompt.
// - A line starting with "#" is no comment: it is an unknown request, and
//   debugfs says `debugfs: Unknown request "#...".  Type "?" for a request
//   list.` on stderr. One starting with "!" still runs a shell.
// - SS_READLINE_PATH=none: otherwise libss loads libreadline where it is
//   installed, and readline echoes every line it reads.
//
// Arguments (lib/ss/parse.c)
// - Split at spaces and tabs only. A double quote starts or ends a quoted
//   part anywhere in a word; inside quotes, "" stands for one literal ". A
//   backslash is NOT special to the parser: `/back\slash` is that name.
//   Quotes can't carry a newline, "\r" or NUL: such names can't be passed.
// - Quoting does not protect from getopt: commands that take options
//   (ea_set, ea_get, ls, dump, ...) use GNU getopt, which permutes, so ANY
//   argument starting with "-" is taken as an option, quoted or not. Pass
//   paths that start with "/" or "./", or `<INODE>` file specs.
// - A file spec of the form `<N>` (whole argument) is an inode number, so a
//   relative name like "<12>" can't be used as a name there: "./<12>" can.
// - How each command takes the path of a NEW entry differs: mkdir, write and
//   symlink split it at the last "/"; mknod does not split it at all, so
//   "/dev/-x" names an entry "/dev/-x" in the current folder. None of them
//   runs getopt or reads "<N>" on that argument: build/populate.ts cds to the
//   folder and gives the bare name (test/populate.test.ts builds them all).
// - ea_set's inline value is further decoded by parse_c_string(): C escapes
//   (\n, \t, \\, \NNN octal, \xHH) and it stops at the first raw `"`.
//   encodeDebugfsValue() writes every byte as \xHH (any bytes, NUL included).
//   `ea_set -f FILE` reads the value from a host file instead (at most one
//   block: blocksize bytes).
//
// Output of stat <N> (debugfs.c internal_dump_inode, xattrs.c)
// - xattr values under 40 bytes: a quoted C string (escapes \a \b \f \n \t \v
//   \\ \' \" and \NNN octal for other non-printables) when more than 7/8 of
//   the bytes are printable, otherwise hex bytes each followed by a space.
//   Empty values print only "name (0)". Values of 40 bytes and more print only
//   "name (LEN)": read them with `ea_get -r -x`. Names follow the same rule
//   (a name with mostly non-ASCII bytes is printed as hex).
// - system.posix_acl_* values are shown as stored on disk (ext4_acl, version
//   1, 4-byte entries for USER_OBJ/GROUP_OBJ/MASK/OTHER), not in the Linux
//   xattr format (version 2, 8-byte entries) that getfattr shows:
//   aclDiskToXattr() converts. `ea_get` without -r converts too, but writes
//   id 0 instead of the kernel's 0xffffffff in the short entries, so its
//   output differs from getfattr's. `ea_set` without -r takes the Linux
//   format (as getfattr prints it) and stores the disk format.
// - "system.data" is the inline-data area, not an xattr a user sees.
// - uid and gid are printed as signed 32-bit numbers (4000000000 shows as
//   -294967296); so are they in `ls -p`.
import { randomBytes } from 'node:crypto';
import { closeSync, createReadStream, openSync, readSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { formatCommand, run } from '../exec.js';
import { withScope, type Scope } from '../cleanup.js';
import { EnvironmentError, ToolError } from '../errors.js';
import { DEBUGFS_PROMPT, fromBinary, toBinary } from './debugfs-text.js';

// ---------------------------------------------------------------------------
// Running scripts

export interface DebugfsOptions {
  /** Open the image read-write (-w). Default: read-only. */
  write?: boolean;
  /**
   * Send stderr into stdout (one descriptor; both are unbuffered in -f mode),
   * so that each command's errors land in its own section, right after its
   * echo line; `stderr` is then empty. Default: separate, and `stderr` holds
   * every error of the run without saying which command caused it.
   */
  mergeStderr?: boolean;
  /** Kill debugfs after this many ms. */
  timeoutMs?: number;
  /** Extra debugfs options placed before -f (e.g. ['-c'] for catastrophic mode). */
  extraArgs?: string[];
  /**
   * Keep of stdout only the inode numbers `write` and `mknod` report ("Allocated inode:
   * N"), in `allocated`; `stdout`, `raw` and `sections` are then empty. For
   * the builder's script, read for its errors and its allocations: its echo
   * lines are as big as the script, and keeping them took time and memory.
   */
  allocatedOnly?: boolean;
  /** Leave `sections` empty, for callers that parse `raw` themselves (the reader's ls and stat batches). */
  noSections?: boolean;
}

export interface DebugfsSection {
  /** The command as given. */
  command: string;
  /** What debugfs printed for it (stdout; plus stderr with mergeStderr), without the echo line. */
  output: string;
}

export interface DebugfsResult {
  /** The debugfs command line that ran, for messages (the script file is gone by then). */
  command: string;
  /** stdout, decoded as UTF-8 (it starts with the echo line of the first command). */
  stdout: string;
  /** stderr, decoded as UTF-8, without the version banner. Empty with mergeStderr. */
  stderr: string;
  /** stdout as bytes: names and symlink targets are printed raw. */
  raw: Buffer;
  /** One per command, in order. */
  sections: DebugfsSection[];
  /** With allocatedOnly: the inode of each "Allocated inode: N" line, in order. */
  allocated: number[];
  /**
   * What debugfs printed before the echo line of the first command (with
   * mergeStderr: its complaints about opening the filesystem), decoded, without the banner.
   */
  preamble: string;
}

/** The longest script line debugfs reads whole (fgets with BUFSIZ 8192, plus the newline). */
export const DEBUGFS_MAX_LINE = 8190;

/** Throws unless `command` is one line that debugfs -f runs exactly as written. */
export function checkDebugfsCommand(command: string): void {
  if (/[\n\r\0]/.test(command)) throw new Error(`debugfs command contains a newline, CR or NUL: ${JSON.stringify(command)}`);
  const start = command.replace(/^[ \t]+/, '');
  if (start === '' || start.startsWith('#') || start.startsWith('!')) {
    throw new Error(`debugfs command is empty, a comment or a shell escape: ${JSON.stringify(command)}`);
  }
  if (Buffer.byteLength(command) > DEBUGFS_MAX_LINE) {
    throw new Error(`debugfs command longer than ${DEBUGFS_MAX_LINE} bytes (debugfs would split it): ${command.slice(0, 80)}...`);
  }
}

// Output goes to files, not pipes: the bytes stay exact (no UTF-8 decoding on
// the way) and memory holds one copy. A fixed script; every value is an argument.
const WRAPPER = 'out=$1; err=$2; shift 2; exec debugfs "$@" >"$out" 2>"$err"';
const WRAPPER_MERGED = 'out=$1; shift 2; exec debugfs "$@" >"$out" 2>&1';
const WRAPPER_SESSION = 'exec debugfs "$1" >"$2" 2>&1';
// TZ=UTC: debugfs formats 4 times per inode with localtime(); without TZ
// glibc stats /etc/localtime for each. LC_ALL=C: debugfs sets LC_CTYPE and
// LC_MESSAGES from the environment, which would change which xattr values
// print as strings and the wording of errors.
const DEBUGFS_ENV = { TZ: 'UTC', LC_ALL: 'C' };
const SESSION_ENV = { ...DEBUGFS_ENV, SS_READLINE_PATH: 'none' };
const PROMPT = Buffer.from(DEBUGFS_PROMPT);
const BANNER = /^debugfs \d+\.\d+[^\n]*\n/;

/**
 * Runs `commands` in one debugfs process: `debugfs [-w] -f CMDFILE IMAGE`.
 * Throws ToolError when debugfs cannot open the image or does not run at all;
 * failures of single commands do not throw (debugfs exits 0 anyway): look at
 * `stderr`, or at the sections with `mergeStderr`.
 */
export async function runDebugfs(image: string, commands: string[], opts: DebugfsOptions = {}): Promise<DebugfsResult> {
  for (const c of commands) checkDebugfsCommand(c);
  return withScope(async (scope) => {
    const dir = await scope.tempDir('part-image-debugfs-');
    const cmdFile = join(dir, 'commands');
    await writeFile(cmdFile, commands.map((c) => `${c}\n`).join(''));
    return runScriptFile(image, cmdFile, dir, { count: commands.length, first: commands[0] }, opts, commands);
  });
}

/** Bytes of commands handed to the pipe at a time. */
const FEED_CHUNK = 256 * 1024;
/** Bytes of commands made ahead of what debugfs has taken, at most. */
const FEED_AHEAD = 4 * 1024 * 1024;

/**
 * A debugfs script fed to debugfs's stdin (`-f -`) as it is made: debugfs
 * runs the first commands while the rest are still being made (on the
 * builder's script of a Debian root, making it took a quarter of the time
 * debugfs took to run it), and at most FEED_AHEAD bytes of it wait in
 * memory. The maker adds commands, waits on room() when it returns a
 * promise, and calls end(). Each command is checked as it is added
 * (checkDebugfsCommand). Once debugfs has exited, what is still added is
 * dropped.
 */
export class DebugfsFeed {
  private pending: string[] = [];
  private pendingBytes = 0;
  private queue: string[] = [];
  private queuedBytes = 0;
  private ended = false;
  private gone = false;
  private wakeReader: (() => void) | undefined;
  private wakeMaker: (() => void) | undefined;
  count = 0;
  first: string | undefined;

  add(command: string): void {
    checkDebugfsCommand(command);
    this.first ??= command;
    this.count++;
    if (this.gone) return;
    this.pending.push(command, '\n');
    this.pendingBytes += command.length + 1;
    if (this.pendingBytes >= FEED_CHUNK) this.hand();
  }

  /** A promise while FEED_AHEAD bytes wait for debugfs: resolved once it has taken some. */
  room(): Promise<void> | undefined {
    if (this.queuedBytes < FEED_AHEAD || this.gone) return undefined;
    return new Promise((r) => {
      this.wakeMaker = r;
    });
  }

  /** The script is complete. */
  end(): void {
    this.hand();
    this.ended = true;
    this.wake();
  }

  /** debugfs has exited: nothing more is kept, and a maker waiting for room goes on. */
  drop(): void {
    this.gone = true;
    this.pending = [];
    this.queue = [];
    this.queuedBytes = 0;
    this.wake();
  }

  /** The chunks, as debugfs's stdin takes them. */
  async *chunks(): AsyncGenerator<string> {
    for (;;) {
      const c = this.queue.shift();
      if (c !== undefined) {
        this.queuedBytes -= c.length;
        if (this.queuedBytes < FEED_AHEAD) this.wakeMaker?.();
        yield c;
        continue;
      }
      if (this.ended || this.gone) return;
      await new Promise<void>((r) => {
        this.wakeReader = r;
      });
    }
  }

  private hand(): void {
    if (this.pending.length === 0) return;
    this.queue.push(this.pending.join(''));
    this.queuedBytes += this.pendingBytes;
    this.pending = [];
    this.pendingBytes = 0;
    this.wakeReader?.();
  }

  private wake(): void {
    const r = this.wakeReader;
    const m = this.wakeMaker;
    this.wakeReader = undefined;
    this.wakeMaker = undefined;
    r?.();
    m?.();
  }
}

// ---------------------------------------------------------------------------
// A debugfs process kept open for many batches

/**
 * One `debugfs IMAGE` kept open and fed batch after batch on its stdin, in
 * its own command loop, stderr merged into stdout (see the top of this
 * file): a command's output comes after its prompt, in one write or a few.
 * A process per batch cost the image reader 4-5 ms of its main thread to
 * spawn each, and every level of the walk waited for one to start and exit;
 * `-f -` wrote every piece of every line on its own (a Debian root's stats
 * took 0.41 s of debugfs, 0.16 s in its loop).
 *
 * The output goes to a file that is read as it grows, every POLL_MS while an
 * answer is awaited, not to a pipe: through a pipe each write wakes the
 * reader (with -f, 62,000 reads for the stats of a Debian root, 0.55 s
 * against 0.42 s, and three times the CPU).
 *
 * Each batch is followed by a line holding a random token and the batch's
 * number, which debugfs answers with an unknown-request error quoting it,
 * once every command before it has run and its output is flushed. A
 * batch's answer is what comes before the prompt of that line: a prompt,
 * then the output of its command, for each command in order. The token is
 * drawn when the session starts: no name or symlink target in the image can
 * hold it. A batch of number 0 is sent first: its answer is the `preamble`,
 * what debugfs said on opening the filesystem (the version banner removed).
 *
 * Batches run in the order they were given, one after the other. close()
 * ends stdin, waits for debugfs to exit and removes the output file; a
 * session whose process ended (killed, crashed, a shutdown) fails the batches
 * still pending.
 */
export class DebugfsSession {
  /** What debugfs printed on opening the filesystem, before any command. */
  preamble = '';
  /** Batches given and not yet answered. */
  pendingBatches = 0;
  /** Bytes debugfs has written so far. */
  outputBytes = 0;
  private readonly token = `#part-image-${randomBytes(16).toString('hex')}-`;
  private sent = 0;
  private readonly waiting: { end: Buffer; resolve: (out: Buffer) => void; reject: (err: unknown) => void }[] = [];
  private chunks: Buffer[] = [];
  private held = 0;
  /** Where in what is held the awaited batch's token is, once found. */
  private tokenAt: number | undefined;
  private readonly input: string[] = [];
  private wakeInput: (() => void) | undefined;
  private ended = false;
  private failure: unknown;
  private timer: NodeJS.Timeout | undefined;
  private readonly buf = Buffer.allocUnsafe(POLL_READ);
  private exited: Promise<void> = Promise.resolve();
  private closing: Promise<void> | undefined;
  private readonly display: string;

  private constructor(
    readonly image: string,
    private readonly out: string,
    private readonly fd: number,
  ) {
    this.display = `${formatCommand('debugfs', [image], { SS_READLINE_PATH: 'none' })}  # a session: batches of commands on stdin`;
  }

  /** Starts debugfs on `image`, its output in a folder of `scope`, and waits for it to have opened the filesystem. */
  static async open(image: string, scope: Scope): Promise<DebugfsSession> {
    const dir = await scope.tempDir('part-image-debugfs-');
    const out = join(dir, 'output');
    await writeFile(out, '');
    const s = new DebugfsSession(image, out, openSync(out, 'r'));
    s.exited = run('sh', ['-c', WRAPPER_SESSION, 'debugfs', image, out], {
      inputChunks: s.feed(),
      onExit: () => s.endInput(),
      env: SESSION_ENV,
      okCodes: [0, 127],
    }).then(
      (r) => {
        s.poll();
        if (r.exitCode === 127) s.fail(debugfsMissing());
        else s.fail(new ToolError(s.display, r.exitCode, 'debugfs exited before it had answered every batch'));
      },
      (err: unknown) => s.fail(err),
    );
    try {
      const head = (await s.send([])).toString('utf8').replace(BANNER, '');
      throwIfNotOpened(head, s.display, undefined, image);
      s.preamble = head;
    } catch (err) {
      await s.close();
      throw err;
    }
    return s;
  }

  /** Runs `commands` after the batches given before; resolves with their raw output: a prompt, then a command's output, for each. */
  run(commands: string[]): Promise<Buffer> {
    for (const c of commands) checkDebugfsCommand(c);
    return this.send(commands);
  }

  /** Ends debugfs once the pending batches have run, waits for it to exit, and removes its output. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.ended = true;
      this.wakeInput?.();
      await this.exited;
      clearInterval(this.timer);
      closeSync(this.fd);
      await rm(this.out, { force: true });
    })();
    return this.closing;
  }

  private send(commands: string[]): Promise<Buffer> {
    if (this.closing) return Promise.reject(new Error('debugfs session already closed'));
    if (this.failure !== undefined) return Promise.reject(this.failure);
    const mark = `${this.token}${this.sent++}`;
    this.input.push(commands.length > 0 ? `${commands.join('\n')}\n${mark}\n` : `${mark}\n`);
    this.wakeInput?.();
    this.pendingBatches++;
    this.timer ??= setInterval(() => this.poll(), POLL_MS);
    return new Promise<Buffer>((resolve, reject) => {
      // As the error quotes it: the quotes tell batch 1 from batch 10.
      this.waiting.push({ end: Buffer.from(`"${mark}"`), resolve, reject });
    });
  }

  /** debugfs has exited: nothing more goes to its stdin. */
  private endInput(): void {
    this.ended = true;
    this.input.length = 0;
    this.wakeInput?.();
  }

  private async *feed(): AsyncGenerator<string> {
    for (;;) {
      const c = this.input.shift();
      if (c !== undefined) {
        yield c;
        continue;
      }
      if (this.ended || this.failure !== undefined) return;
      await new Promise<void>((r) => {
        this.wakeInput = r;
      });
      this.wakeInput = undefined;
    }
  }

  /** Takes in what debugfs wrote since the last look. */
  private poll(): void {
    for (;;) {
      const n = readSync(this.fd, this.buf, 0, this.buf.length, this.outputBytes);
      if (n <= 0) break;
      this.outputBytes += n;
      this.take(Buffer.from(this.buf.subarray(0, n)));
      if (n < this.buf.length) break;
    }
    if (this.waiting.length === 0 && this.timer !== undefined) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  private take(chunk: Buffer): void {
    let fresh = chunk;
    for (;;) {
      const head = this.waiting[0];
      if (!head || (fresh.length === 0 && this.tokenAt === undefined)) break;
      if (this.tokenAt === undefined) {
        // The token may begin in what is held: look in its tail and the new bytes only.
        const tail = this.tail(head.end.length - 1);
        const p = (tail.length > 0 ? Buffer.concat([tail, fresh]) : fresh).indexOf(head.end);
        if (p < 0) break;
        this.tokenAt = this.held - tail.length + p;
      }
      const all = Buffer.concat([...this.chunks, fresh], this.held + fresh.length);
      const lineEnd = all.indexOf(0x0a, this.tokenAt + head.end.length);
      if (lineEnd < 0) {
        // The rest of the error line is still to come.
        this.chunks = [all];
        this.held = all.length;
        return;
      }
      const at = this.tokenAt;
      const prompt = all.lastIndexOf(PROMPT, at);
      const echoed = prompt < 0 || all.subarray(prompt, at).includes(0x0a);
      this.tokenAt = undefined;
      this.chunks = [];
      this.held = 0;
      if (echoed) {
        // Not debugfs's own loop as this module knows it (readline echoing the lines read, another version).
        this.fail(new ToolError(this.display, undefined, `unexpected output at the end of a batch (not the prompt, then the error about its last line): ${JSON.stringify(all.subarray(Math.max(0, at - 200), lineEnd).toString('latin1'))}`));
        return;
      }
      this.waiting.shift();
      this.pendingBatches--;
      head.resolve(all.subarray(0, prompt));
      fresh = all.subarray(lineEnd + 1);
    }
    if (fresh.length > 0) {
      this.chunks.push(fresh);
      this.held += fresh.length;
    }
  }

  /** The last `n` bytes held (fewer when fewer are). */
  private tail(n: number): Buffer {
    const parts: Buffer[] = [];
    let got = 0;
    for (let i = this.chunks.length - 1; i >= 0 && got < n; i--) {
      parts.unshift(this.chunks[i]);
      got += this.chunks[i].length;
    }
    const t = parts.length === 1 ? parts[0] : Buffer.concat(parts);
    return t.subarray(Math.max(0, t.length - n));
  }

  private fail(err: unknown): void {
    this.failure ??= err;
    this.ended = true;
    this.wakeInput?.();
    for (const w of this.waiting.splice(0)) w.reject(this.failure);
    this.pendingBatches = 0;
    clearInterval(this.timer);
    this.timer = undefined;
  }
}

/** The shell found no debugfs (exit 127). */
function debugfsMissing(): EnvironmentError {
  return new EnvironmentError('tool missing: debugfs', 'Install it: apt-get install e2fsprogs');
}

/**
 * debugfs reports a filesystem it cannot open before it runs the first
 * command (and then runs every command against nothing): a ToolError
 * naming the line, for what it printed before its first command.
 */
function throwIfNotOpened(head: string, display: string, exitCode: number | undefined, image: string): void {
  const openError = /^.*while (trying to open|opening filesystem).*$/m.exec(head);
  if (openError) throw new ToolError(display, exitCode, openError[0], `debugfs cannot open ${image}: is it an ext2/3/4 image?`);
}

/** How often a session looks for new output while it awaits an answer. */
const POLL_MS = 1;
/** Bytes read from a session's output at a time. */
const POLL_READ = 4 * 1024 * 1024;

/** runDebugfs() for a script that is fed to debugfs as it is made (DebugfsFeed); settles once debugfs has exited. */
export async function runDebugfsFeed(image: string, feed: DebugfsFeed, opts: DebugfsOptions = {}): Promise<DebugfsResult> {
  return withScope(async (scope) => {
    const dir = await scope.tempDir('part-image-debugfs-');
    return await runScriptFile(image, feed, dir, feed, { ...opts, noSections: true });
  }).finally(() => feed.drop());
}

async function runScriptFile(
  image: string, script: string | DebugfsFeed, dir: string, what: { count: number; first: string | undefined }, opts: DebugfsOptions, commands?: string[],
): Promise<DebugfsResult> {
  const outFile = join(dir, 'stdout');
  const errFile = join(dir, 'stderr');
  const fed = typeof script !== 'string';
  const args = [...(opts.write ? ['-w'] : []), ...(opts.extraArgs ?? []), '-f', fed ? '-' : script, image];
  const result = await run('sh', ['-c', opts.mergeStderr ? WRAPPER_MERGED : WRAPPER, 'debugfs', outFile, errFile, ...args], {
    inputChunks: fed ? script.chunks() : undefined,
    env: DEBUGFS_ENV,
    okCodes: [0, 127],
    timeoutMs: opts.timeoutMs,
    allowTimeout: true,
  });
  if (result.exitCode === 127) {
    throw debugfsMissing();
  }
  const allocated = opts.allocatedOnly ? await allocatedIn(outFile) : [];
  const raw = opts.allocatedOnly ? Buffer.alloc(0) : await readFile(outFile).catch(() => Buffer.alloc(0));
  let stderr = (await readFile(errFile).catch(() => Buffer.alloc(0))).toString('utf8').replace(BANNER, '');
  if (opts.mergeStderr) stderr = '';
  const preamble = preambleOf(raw, opts.mergeStderr === true);
  // Named after the run: a fed script's length is known only then.
  const display = `${formatCommand('debugfs', [...args.slice(0, -3), '-f', 'SCRIPT', image])}  # SCRIPT${fed ? ' (on stdin)' : ''}: ${what.count} command(s), the first: ${what.first ?? '(none)'}`;
  if (result.timedOut) throw new ToolError(display, undefined, `timed out after ${opts.timeoutMs} ms\n${stderr}`);
  throwIfNotOpened(opts.mergeStderr ? preamble : stderr, display, result.exitCode, image);
  const sections = opts.allocatedOnly || opts.noSections || !commands ? [] : splitDebugfsOutput(raw, commands);
  // stdout is decoded only when asked for: a reader's batch is megabytes, and
  // its parsers read `raw`.
  let stdout: string | undefined;
  return {
    command: display, stderr, raw, sections, allocated, preamble,
    get stdout() {
      stdout ??= opts.mergeStderr ? raw.toString('utf8').replace(BANNER, '') : raw.toString('utf8');
      return stdout;
    },
  };
}

/** What a run printed before the echo line of its first command, decoded, without the version banner. */
function preambleOf(raw: Buffer, merged: boolean): string {
  let end = raw.length;
  if (raw.subarray(0, ECHO.length).equals(ECHO)) end = 0;
  else {
    const at = raw.indexOf(NL_ECHO);
    // The newline before the echo line stays: BANNER ends with it.
    if (at >= 0) end = at + 1;
  }
  const head = raw.subarray(0, end).toString('utf8');
  return merged ? head.replace(BANNER, '') : head;
}

const ECHO = Buffer.from('debugfs: ');
const NL_ECHO = Buffer.from('\ndebugfs: ');

const ALLOCATED = Buffer.from('\nAllocated inode: ');

/** The numbers of the "Allocated inode: N" lines of a stdout file, read a piece at a time (it is as big as the script). */
async function allocatedIn(file: string): Promise<number[]> {
  const out: number[] = [];
  // A leading newline, so that a match on the first line is found the same way.
  let carry: Buffer = Buffer.from('\n');
  for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 })) {
    const buf = carry.length ? Buffer.concat([carry, chunk as Buffer]) : (chunk as Buffer);
    let at = 0;
    let keep = Math.max(0, buf.length - ALLOCATED.length - 12);
    for (;;) {
      const i = buf.indexOf(ALLOCATED, at);
      if (i < 0) break;
      const nl = buf.indexOf(0x0a, i + ALLOCATED.length);
      if (nl < 0) {
        keep = Math.min(keep, i);
        break;
      }
      out.push(Number(buf.toString('latin1', i + ALLOCATED.length, nl)));
      at = nl;
    }
    carry = buf.subarray(Math.max(keep, at));
  }
  return out;
}

/**
 * Splits the stdout of a `debugfs -f` run at the echo lines of `commands`
 * (found in order, each after the previous one); what comes before the first
 * echo line is dropped. A section's output is decoded as UTF-8. Exact as long
 * as no printed name contains a newline followed by the next echo line; the
 * readers parse `raw` with parseLsPSections()/parseStatSections() instead.
 */
export function splitDebugfsOutput(output: Buffer | string, commands: string[]): DebugfsSection[] {
  const text = toBinary(output);
  const starts: { at: number; body: number }[] = [];
  let from = 0;
  for (const command of commands) {
    const echo = `debugfs: ${Buffer.from(command, 'utf8').toString('latin1')}\n`;
    let at: number;
    if (from === 0 && text.startsWith(echo)) at = 0;
    else {
      at = text.indexOf(`\n${echo}`, Math.max(0, from - 1));
      if (at < 0) break;
      at += 1;
    }
    starts.push({ at, body: at + echo.length });
    from = at + echo.length;
  }
  return commands.map((command, i) => {
    const s = starts[i];
    if (!s) return { command, output: '' };
    const end = starts[i + 1]?.at ?? text.length;
    return { command, output: fromBinary(text.slice(s.body, end)) };
  });
}

// ---------------------------------------------------------------------------
// Writing arguments

/**
 * Quotes one argument for a debugfs command line (libss rules): bare when it
 * has no space, tab or double quote, otherwise in double quotes with every "
 * doubled. Backslashes stay as they are (libss leaves them alone). Refuses
 * newline, CR and NUL, which no quoting can carry. Does not protect a leading
 * "-" from getopt, nor "<N>" from being an inode: pass "./NAME" or "/PATH".
 */
export function quoteDebugfsArg(s: string): string {
  if (/[\n\r\0]/.test(s)) throw new Error(`debugfs can't take an argument with a newline, CR or NUL: ${JSON.stringify(s)}`);
  if (s !== '' && !/[ \t"]/.test(s)) return s;
  return `"${s.replace(/"/g, '""')}"`;
}

/**
 * An ea_set inline value: every byte as \xHH, which parse_c_string() decodes
 * back to the byte (NUL included); `""` for the empty value. 4 characters per
 * byte: values of more than ~1900 bytes need `ea_set -f FILE` (a line may not
 * exceed DEBUGFS_MAX_LINE).
 */
export function encodeDebugfsValue(value: Buffer): string {
  if (value.length === 0) return '""';
  let s = '';
  for (const b of value) s += `\\x${b.toString(16).padStart(2, '0')}`;
  return s;
}
