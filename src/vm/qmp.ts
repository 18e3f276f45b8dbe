// A client for qemu's machine protocol (QMP) on a unix socket: one JSON
// object per line each way; replies carry the id of their command, events
// come in between and are kept for whoever waits for them.
import { connect, type Socket } from 'node:net';
import { scsiDiskDevice } from '../tools/qemu.js';

export interface QmpReply {
  return?: unknown;
  error?: { class: string; desc: string };
}

export class QmpError extends Error {}

/** qemu did not answer in time: it is stuck, not just refusing. */
export class QmpNoAnswer extends QmpError {}

/** How long a command may go without an answer: qemu answers in milliseconds, or has stopped answering. */
export const QMP_ANSWER_MS = 30_000;

export class Qmp {
  private buffer = '';
  private nextId = 1;
  private waiting = new Map<string, (r: QmpReply) => void>();
  private closed?: Error;
  readonly events: { event: string; data?: unknown }[] = [];

  private constructor(private readonly sock: Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => this.onData(chunk));
    const fail = (err: Error) => {
      this.closed = err;
      for (const resolve of this.waiting.values()) resolve({ error: { class: 'Closed', desc: err.message } });
      this.waiting.clear();
    };
    sock.on('error', fail);
    sock.on('close', () => fail(new QmpError('the QMP connection closed')));
  }

  /**
   * Connects to qemu's QMP socket, retrying until qemu has made it, and waits
   * for its greeting: at most `timeoutMs` in all. The kernel accepts a
   * connection on a listening socket even when qemu's main loop does not
   * run, so a qemu that is stuck connects but never greets.
   */
  static async connect(path: string, timeoutMs: number): Promise<Qmp> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      try {
        const sock = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path);
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
        const qmp = new Qmp(sock);
        const left = Math.max(until - Date.now(), 1_000);
        if (!(await qmp.greeting(left))) {
          qmp.close();
          throw new QmpNoAnswer(`qemu took the QMP connection at ${path} but did not greet within ${timeoutMs / 1000} s: it is not answering`);
        }
        await qmp.execute('qmp_capabilities', undefined, left);
        return qmp;
      } catch (err) {
        if (err instanceof QmpNoAnswer) throw err;
        if (Date.now() > until) throw new QmpError(`cannot talk to qemu over QMP at ${path}: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }

  private greetingSeen?: () => void;
  private greeted = false;

  /** Whether qemu greeted within `ms`. */
  private greeting(ms: number): Promise<boolean> {
    if (this.greeted) return Promise.resolve(true);
    let timer: NodeJS.Timeout | undefined;
    return new Promise<boolean>((resolve) => {
      this.greetingSeen = () => resolve(true);
      timer = setTimeout(() => resolve(false), ms);
    }).finally(() => clearTimeout(timer));
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (!line) continue;
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      if ('QMP' in msg) {
        this.greeted = true;
        this.greetingSeen?.();
      } else if (typeof msg.event === 'string') {
        this.events.push({ event: msg.event, data: msg.data });
      } else if (typeof msg.id === 'string') {
        const resolve = this.waiting.get(msg.id);
        this.waiting.delete(msg.id);
        resolve?.(msg as QmpReply);
      }
    }
  }

  /** Runs one command; throws QmpError with qemu's words when it fails, or when qemu does not answer within `answerMs`. */
  async execute(command: string, args?: Record<string, unknown>, answerMs = QMP_ANSWER_MS): Promise<unknown> {
    if (this.closed) throw new QmpError(`${command}: ${this.closed.message}`);
    const id = `pi-${this.nextId++}`;
    let timer: NodeJS.Timeout | undefined;
    // undefined: no answer in time.
    const reply = await new Promise<QmpReply | undefined>((resolve) => {
      this.waiting.set(id, resolve);
      timer = setTimeout(() => {
        this.waiting.delete(id);
        resolve(undefined);
      }, answerMs);
      this.sock.write(`${JSON.stringify({ execute: command, arguments: args, id })}\n`);
    }).finally(() => clearTimeout(timer));
    if (!reply) throw new QmpNoAnswer(`${command}: no answer from qemu within ${answerMs / 1000} s`);
    if (reply.error) throw new QmpError(`${command}: ${reply.error.desc}`);
    return reply.return;
  }

  close(): void {
    this.sock.destroy();
  }
}

/**
 * The QMP arguments that hot-plug a host file as the SCSI disk at `lun` of the
 * VM's virtio-scsi controller (tools/qemu.ts SCSI_BUS), with `serial`. A SCSI
 * disk, not a virtio-blk PCI device: the guest takes a new LUN from a
 * virtio-scsi event at once, where a PCI hot-plug waits on an ACPI event and
 * a bus rescan (seconds under TCG). Pure.
 */
export function hotplugDiskCommands(
  id: string,
  path: string,
  serial: string,
  o: { lun: number; readOnly?: boolean; format?: 'raw' | 'qcow2' },
): [string, Record<string, unknown>][] {
  return [
    [
      'blockdev-add',
      {
        'node-name': id,
        driver: o.format ?? 'raw',
        'read-only': o.readOnly ?? false,
        cache: { 'no-flush': true },
        file: { driver: 'file', filename: path, 'read-only': o.readOnly ?? false },
      },
    ],
    ['device_add', { ...scsiDiskDevice(id, o.lun, serial), id: `dev-${id}` }],
  ];
}
