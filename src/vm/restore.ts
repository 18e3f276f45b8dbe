// One job on a restored VM: qemu loads the saved state (state.ts) with the
// root on its own throw-away overlay while the caller makes the job disk
// (`prepare`), the disks are hot-plugged over QMP as SCSI disks (the images
// under test, then the job disk at LUN 0, which the waiting runner picks
// up), and the VM is ended with QMP `quit` as soon as
// the runner has sent "exit N": it is thrown away, there is nothing to shut
// down.
//
// A restore that does not get as far as the runner's "begin" (qemu refuses
// the state, or the guest does not answer) is reported as not restored, so
// that the caller can drop the state and save a new one. A qemu that stops
// answering before the restored VM runs (no QMP greeting, no reply) is
// killed once TAKE_STATE_MS have passed and reported as stalled: that says
// nothing against the state, and the caller tries it once more.
import type { RunResult } from '../exec.js';
import { runQemu, type QemuSpec } from '../tools/qemu.js';
import { resultsSay } from './job.js';
import { hotplugDiskCommands, Qmp } from './qmp.js';
import type { SavedState } from './state.js';
import { FileTail, pollUntil, sleep } from './watch.js';

export interface RestoreOptions {
  /** The spec the state was saved with, minus what a run changes. */
  spec: Omit<QemuSpec, 'disks' | 'serialFiles' | 'qmpSocket' | 'pidFile' | 'incomingState'>;
  saved: SavedState;
  /** This run's folder: overlays, sockets, serial files. */
  dir: string;
  consoleFile: string;
  resultsFile: string;
  pidFile: string;
  /** Hot-plugged as SCSI disks at their LUNs, the highest LUN first: the job disk (LUN 0) last. */
  disks: { path: string; serial: string; readOnly: boolean; lun: number }[];
  /** Makes the disks ready (the job disk) while qemu loads the state; awaited before they are plugged in. Its error is thrown, not taken for a state that does not restore. */
  prepare?: () => Promise<void>;
  timeoutMs: number;
  /** Time from the restored VM running to the runner's "begin": past it, the restore failed. */
  beginTimeoutMs: number;
  /** Time from qemu's start to the restored VM running: past it, qemu is stuck and is killed. Default TAKE_STATE_MS. */
  takeStateTimeoutMs?: number;
  /** New console text, as it comes. */
  onConsole?: (text: string) => void;
  /** The phase the run is in, for a progress line. */
  onPhase?: (phase: string) => void;
}

export type RestoreOutcome =
  | { restored: true; qemu: RunResult; phases: Record<string, number> }
  | { restored: false; why: string; qemu?: RunResult; stalled?: boolean };

/**
 * From qemu's start to the restored VM running, not counting the wait for the
 * caller's `prepare`. It takes 0.2-1 s under TCG on a 2-core machine (the
 * phases' "running"); a qemu that has not got there in 30 s has stopped
 * answering.
 */
export const TAKE_STATE_MS = 30_000;

/** The caller's `prepare` failed: its error, not the state's. */
class PrepareFailed extends Error {
  constructor(readonly error: unknown) {
    super('prepare failed');
  }
}

export async function runRestored(o: RestoreOptions): Promise<RestoreOutcome> {
  const t0 = Date.now();
  const phases: Record<string, number> = {};
  const mark = (name: string) => {
    phases[name] = Date.now() - t0;
  };
  const qmpSocket = `${o.dir}/qmp.sock`;
  const takeMs = o.takeStateTimeoutMs ?? TAKE_STATE_MS;
  o.onPhase?.('restoring the VM');
  const killer = new AbortController();
  const qemu = runQemu(
    {
      ...o.spec,
      disks: [{ path: o.saved.disk, format: 'qcow2', serial: 'pi-root', snapshot: true }],
      serialFiles: [o.consoleFile, o.resultsFile],
      qmpSocket,
      pidFile: o.pidFile,
      incomingState: o.saved.state,
    },
    o.timeoutMs,
    o.dir,
    killer.signal,
  );
  // Every wait below is bounded, but a qemu that is stuck is known sooner by the clock.
  // The time waiting for the caller's `prepare` does not count: that is not qemu's.
  let stalled = false;
  let watchdog: NodeJS.Timeout | undefined;
  const arm = () => {
    clearTimeout(watchdog);
    watchdog = setTimeout(() => {
      stalled = true;
      killer.abort();
    }, takeMs);
  };
  arm();
  const prepared = (o.prepare?.() ?? Promise.resolve()).then(
    () => undefined,
    (err: unknown) => new PrepareFailed(err),
  );
  let exited = false;
  const done = qemu.finally(() => {
    exited = true;
  });
  const results = new FileTail(o.resultsFile);
  const consoleTail = new FileTail(o.consoleFile);
  const pollConsole = async () => {
    const added = await consoleTail.poll();
    if (added) o.onConsole?.(added);
  };
  let qmp: Qmp | undefined;
  const fail = async (why: string): Promise<RestoreOutcome> => {
    await quit();
    const r = await done;
    // A retry makes the job disk anew: this run's making of it must be over; and its failure is the job's, not the state's.
    const failed = await prepared;
    if (failed) throw failed.error;
    if (stalled) return { restored: false, stalled: true, why: `qemu did not take the saved state within ${takeMs / 1000} s and stopped answering; it was killed`, qemu: r };
    // Out of time is the job's limit, not a state that does not restore.
    if (r.timedOut) return { restored: true, qemu: r, phases };
    const said = r.stderr.trim().split('\n').filter(Boolean).pop();
    return { restored: false, why: said && r.exitCode !== 0 ? `${why}; qemu said: ${said}` : why, qemu: r };
  };
  const quit = async () => {
    if (exited) return;
    await qmp?.execute('quit', undefined, 2_000).catch(() => undefined);
    await Promise.race([done, sleep(5_000)]);
    if (!exited) {
      killer.abort();
      await done;
    }
  };
  try {
    qmp = await Promise.race([Qmp.connect(qmpSocket, takeMs), done.then(() => undefined)]);
    if (!qmp) return await fail('qemu exited before it took the saved state');
    mark('qmp');
    // The state was saved with the CPU stopped, so it loads stopped: the
    // disks are plugged in then, and `cont` runs the guest, which takes them
    // all in one go.
    let plugged = false;
    const plug = async () => {
      clearTimeout(watchdog);
      const failed = await prepared;
      if (failed) throw failed;
      arm();
      mark('prepared');
      o.onPhase?.('attaching the disks');
      const order = [...o.disks].sort((a, b) => b.lun - a.lun);
      for (const [i, d] of order.entries()) {
        for (const [cmd, args] of hotplugDiskCommands(`hp${i}`, d.path, d.serial, { readOnly: d.readOnly, lun: d.lun })) await qmp!.execute(cmd, args);
      }
      plugged = true;
      mark('attached');
    };
    const running = await pollUntil(async () => {
      if (exited) return false;
      const s = (await qmp!.execute('query-status').catch(() => undefined)) as { status?: string } | undefined;
      if (s?.status === 'running') return true;
      if (s?.status === 'paused' || s?.status === 'postmigrate') {
        mark('restored');
        if (!plugged) await plug();
        await qmp!.execute('cont');
        return undefined;
      }
      if (s && s.status !== 'inmigrate') return false;
      return undefined;
    }, 60_000, 20);
    if (!running) {
      const s = (await qmp.execute('query-status').catch(() => undefined)) as { status?: string } | undefined;
      return await fail(exited ? 'qemu did not load the saved state' : `qemu did not resume the saved VM (status ${s?.status ?? 'unknown'})`);
    }
    mark('running');
    if (!plugged) await plug();
    clearTimeout(watchdog);
    const began = await pollUntil(async () => {
      await results.poll();
      await pollConsole();
      if (resultsSay(results.text, 'begin')) return true;
      return exited ? false : undefined;
    }, o.beginTimeoutMs, 20);
    if (!began) return await fail(exited ? 'the restored VM stopped before its runner took the job' : `the restored VM's runner did not take the job within ${o.beginTimeoutMs / 1000} s`);
    mark('begin');
    o.onPhase?.('running the job');
    await pollUntil(async () => {
      await results.poll();
      await pollConsole();
      if (!phases.started && resultsSay(results.text, 'started')) mark('started');
      return resultsSay(results.text, 'exit ') || exited ? true : undefined;
    }, o.timeoutMs, 50);
    mark('exit');
    await quit();
    await pollConsole();
    mark('quit');
    return { restored: true, qemu: await done, phases };
  } catch (err) {
    // fail() throws the error of a failed `prepare` (plug() threw its PrepareFailed).
    return await fail(`QMP: ${(err as Error).message}`);
  } finally {
    clearTimeout(watchdog);
    qmp?.close();
  }
}
