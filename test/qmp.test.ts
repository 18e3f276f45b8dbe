// The QMP client against peers on a real unix socket that behave the way a
// stuck qemu does: the kernel accepts the connection, but nothing greets or
// answers. Every wait is bounded (a restore once waited 11 minutes on a
// greeting that never came). And run()'s `kill` signal, which ends such a
// process, even a stopped one.
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Qmp, QmpError, QmpNoAnswer } from '../src/vm/qmp.js';
import { run } from '../src/exec.js';
import { execa } from 'execa';
import { dirname } from 'node:path';
import { CLI } from './helpers/cli.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pi-qmp-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A QMP peer: `greet` says the greeting; each command line goes to `answer`, which may say nothing. */
async function peer(name: string, greet: boolean, answer: (cmd: { execute: string; id: string }, sock: Socket) => void): Promise<{ path: string; server: Server; seen: string[] }> {
  const path = join(dir, name);
  const seen: string[] = [];
  const server = createServer((sock) => {
    if (greet) sock.write(`${JSON.stringify({ QMP: { version: {}, capabilities: [] } })}\n`);
    let buf = '';
    sock.on('data', (d) => {
      buf += String(d);
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const cmd = JSON.parse(buf.slice(0, nl)) as { execute: string; id: string };
        buf = buf.slice(nl + 1);
        seen.push(cmd.execute);
        answer(cmd, sock);
      }
    });
    sock.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(path, r));
  return { path, server, seen };
}

const reply = (cmd: { id: string }, sock: Socket, ret: unknown = {}) => sock.write(`${JSON.stringify({ return: ret, id: cmd.id })}\n`);

describe('QMP client', () => {
  it('a peer that takes the connection but never greets fails connect within its time, as no answer', async () => {
    const p = await peer('silent.sock', false, () => undefined);
    try {
      const t = Date.now();
      const err = await Qmp.connect(p.path, 1_500).then(
        () => undefined,
        (e: unknown) => e,
      );
      const took = Date.now() - t;
      expect(err).toBeInstanceOf(QmpNoAnswer);
      expect((err as Error).message).toMatch(/did not greet within 1.5 s: it is not answering/);
      expect(took).toBeGreaterThanOrEqual(1_000);
      expect(took).toBeLessThan(10_000);
      expect(p.seen).toEqual([]);
    } finally {
      p.server.close();
    }
  });

  it('a command with no reply throws QmpNoAnswer after its time; the connection still serves the next one', async () => {
    const p = await peer('deaf.sock', true, (cmd, sock) => {
      if (cmd.execute !== 'query-status') reply(cmd, sock, cmd.execute === 'query-name' ? { name: 'pi' } : {});
    });
    try {
      const qmp = await Qmp.connect(p.path, 5_000);
      try {
        const t = Date.now();
        await expect(qmp.execute('query-status', undefined, 400)).rejects.toThrow(QmpNoAnswer);
        expect(Date.now() - t).toBeGreaterThanOrEqual(350);
        await expect(qmp.execute('query-status', undefined, 300)).rejects.toThrow(/query-status: no answer from qemu within 0.3 s/);
        expect(await qmp.execute('query-name')).toEqual({ name: 'pi' });
        expect(p.seen).toEqual(['qmp_capabilities', 'query-status', 'query-status', 'query-name']);
      } finally {
        qmp.close();
      }
    } finally {
      p.server.close();
    }
  });

  it("qemu's error is a QmpError, not a missing answer; a closed connection fails the commands waiting on it", async () => {
    const p = await peer('refuses.sock', true, (cmd, sock) => {
      if (cmd.execute === 'cont') sock.write(`${JSON.stringify({ error: { class: 'GenericError', desc: 'not now' }, id: cmd.id })}\n`);
      else if (cmd.execute === 'quit') sock.destroy();
      else reply(cmd, sock);
    });
    try {
      const qmp = await Qmp.connect(p.path, 5_000);
      try {
        const err = await qmp.execute('cont').catch((e: unknown) => e);
        expect(err).toBeInstanceOf(QmpError);
        expect(err).not.toBeInstanceOf(QmpNoAnswer);
        expect((err as Error).message).toBe('cont: not now');
        await expect(qmp.execute('quit', undefined, 5_000)).rejects.toThrow(/quit: the QMP connection closed/);
        await expect(qmp.execute('query-status')).rejects.toThrow(/closed/);
      } finally {
        qmp.close();
      }
    } finally {
      p.server.close();
    }
  });

  it('no socket yet: connect retries until its time, then says it cannot talk to qemu', async () => {
    const t = Date.now();
    await expect(Qmp.connect(join(dir, 'none.sock'), 300)).rejects.toThrow(/cannot talk to qemu over QMP at .*none\.sock/);
    expect(Date.now() - t).toBeGreaterThanOrEqual(300);
  });
});

describe("run()'s kill signal", () => {
  it('kills a running process at once and says it was stopped', async () => {
    const ac = new AbortController();
    const t = Date.now();
    setTimeout(() => ac.abort(), 200);
    const r = await run('sleep', ['60'], { okCodes: 'any', kill: ac.signal, timeoutMs: 120_000, allowTimeout: true });
    expect(r.stopped).toBe(true);
    expect(r.timedOut).toBe(false);
    expect(Date.now() - t).toBeLessThan(5_000);
  });

  it('kills a process that is stopped (SIGSTOP), which a SIGTERM would not end', async () => {
    const ac = new AbortController();
    const pidFile = join(dir, 'stopped.pid');
    const p = run('sh', ['-c', 'echo $$ > "$1"; kill -STOP $$; exit 7', 'sh', pidFile], { okCodes: 'any', kill: ac.signal, timeoutMs: 120_000, allowTimeout: true });
    const { readFile } = await import('node:fs/promises');
    let pid = 0;
    for (let i = 0; i < 200 && !pid; i++) {
      pid = Number((await readFile(pidFile, 'utf8').catch(() => '')).trim());
      if (!pid) await new Promise((r) => setTimeout(r, 10));
    }
    expect(pid).toBeGreaterThan(0);
    // Stopped, not gone.
    let state = '';
    for (let i = 0; i < 200 && state !== 'T'; i++) {
      state = /^\d+ \(.*\) (\S)/.exec(await readFile(`/proc/${pid}/stat`, 'utf8'))?.[1] ?? '';
      if (state !== 'T') await new Promise((r) => setTimeout(r, 10));
    }
    expect(state).toBe('T');
    const t = Date.now();
    ac.abort();
    const r = await p;
    expect(r.stopped).toBe(true);
    expect(r.exitCode).not.toBe(7);
    expect(Date.now() - t).toBeLessThan(2_000);
  });

  it('24 children at once print no MaxListenersExceededWarning (each listens on the shutdown signal)', async () => {
    const exec = join(dirname(CLI), 'exec.js');
    const script = `import(${JSON.stringify(exec)}).then(async ({ run }) => { await Promise.all(Array.from({ length: 24 }, () => run('sleep', ['0.3']))); console.log('ran 24'); });`;
    const r = await execa('node', ['-e', script], { reject: false });
    expect(r.stdout).toBe('ran 24');
    expect(r.stderr).toBe('');
  });

  it('an aborted signal kills the process as soon as it starts', async () => {
    const ac = new AbortController();
    ac.abort();
    const r = await run('sleep', ['60'], { okCodes: 'any', kill: ac.signal, timeoutMs: 120_000, allowTimeout: true });
    expect(r.stopped).toBe(true);
  });
});
