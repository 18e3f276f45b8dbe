// The portable job's results, per image, and the verdict on each unit:
// a service passes when it is active, or finished with exit status 0 (a
// oneshot); other unit types pass when active. Pure.
import type { Finding } from '../types.js';
import { UNIT_START_TIMEOUT_S, type PortableImage } from './portable-job.js';

export interface UnitCheck {
  unit: string;
  /** Templates and unknown types are not started. */
  started: boolean;
  startExit?: number;
  startOutput: string;
  props: Record<string, string>;
  journal: string[];
}

export interface PortableCheck {
  name: string;
  /** undefined: the job never got to the attach. */
  attachExit?: number;
  attachOutput: string;
  inspect: string;
  units: UnitCheck[];
  detachExit?: number;
  detachOutput: string;
}

export function text(files: Map<string, Buffer>, name: string): string {
  return files.get(name)?.toString('utf8') ?? '';
}

function exitOf(files: Map<string, Buffer>, name: string): number | undefined {
  const t = text(files, name).trim();
  return t === '' || !/^\d+$/.test(t) ? undefined : Number(t);
}

function parseProps(t: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of t.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return out;
}

/** The job's result files, per image. Pure. */
export function parsePortableResults(files: Map<string, Buffer>, images: readonly PortableImage[]): PortableCheck[] {
  return images.map((img, i) => ({
    name: img.name,
    attachExit: exitOf(files, `i${i}.attach.rc`),
    attachOutput: text(files, `i${i}.attach`).trim(),
    inspect: text(files, `i${i}.inspect`).trim(),
    units: img.units.map((unit, j) => ({
      unit,
      started: files.has(`i${i}.u${j}.start.rc`),
      startExit: exitOf(files, `i${i}.u${j}.start.rc`),
      startOutput: text(files, `i${i}.u${j}.start`).trim(),
      props: parseProps(text(files, `i${i}.u${j}.show`)),
      journal: text(files, `i${i}.u${j}.journal`)
        .split('\n')
        .filter((l) => l.trim() !== '' && l !== '-- No entries --'),
    })),
    detachExit: exitOf(files, `i${i}.detach.rc`),
    detachOutput: text(files, `i${i}.detach`).trim(),
  }));
}

/** Did a started unit come up? Services: active, or done with status 0; other types: active. */
export function unitOk(u: UnitCheck): boolean {
  const p = u.props;
  if (p.LoadState !== 'loaded') return false;
  if (p.ActiveState === 'active') return true;
  if (!u.unit.endsWith('.service')) return false;
  return p.ActiveState === 'inactive' && p.Result === 'success' && (p.ExecMainStatus ?? '0') === '0' && u.startExit === 0;
}

function lastLines(t: string, n: number): string[] {
  return t.split('\n').filter((l) => l.trim() !== '').slice(-n);
}

/** Findings for one image's check. Pure. */
export function judgePortable(c: PortableCheck): Finding[] {
  if (c.attachExit !== 0) {
    const why = c.attachExit === undefined ? 'the check stopped before the attach' : `exit ${c.attachExit}`;
    return [
      {
        code: 'portable-attach-failed',
        path: c.name,
        message: `portablectl attach --runtime ${c.name} failed (${why}): ${lastLines(c.attachOutput, 1)[0] ?? 'no output'}`,
        actual: lastLines(c.attachOutput, 20),
      },
    ];
  }
  const findings: Finding[] = [];
  for (const u of c.units) {
    if (!u.started || unitOk(u)) continue;
    const p = u.props;
    const state = [
      `${p.ActiveState ?? 'unknown'}${p.SubState ? ` (${p.SubState})` : ''}`,
      p.Result && p.Result !== 'success' ? `result ${p.Result}` : '',
      p.ExecMainStatus && p.ExecMainStatus !== '0' ? `exit status ${p.ExecMainStatus}` : '',
      u.startExit === 124 ? `systemctl start timed out after ${UNIT_START_TIMEOUT_S} s` : '',
    ]
      .filter(Boolean)
      .join(', ');
    // The service's own last words say more than systemd's "Failed to start".
    const lines = u.journal.map((l) => l.replace(/^\[[^\]]*\]\s*/, ''));
    const last = [...lines].reverse().find((l) => !l.startsWith('systemd[')) ?? lines.at(-1);
    findings.push({
      code: u.startExit === 124 ? 'portable-service-timeout' : 'portable-service-failed',
      path: u.unit,
      message: `${u.unit} of the attached image ${c.name} did not come up: ${state}${last ? `; last journal line: ${last}` : ''}`,
      expected: u.unit.endsWith('.service') ? 'active, or exited with status 0' : 'active',
      actual: u.journal.length ? u.journal : lastLines(u.startOutput, 10),
    });
  }
  return findings;
}

