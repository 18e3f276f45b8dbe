// The terminal summary: one line per stage with its time, findings below, the verdict last.
import type { Report, StageResult } from '../types.js';

const MAX_FINDINGS = 20;

/** Why a run that ended in an error says nothing about the image. */
const VERDICTLESS: Record<NonNullable<Report['error']>['kind'], string> = {
  input: 'the input or the flags are bad',
  environment: 'this host could not run it',
  internal: 'a bug in part-image stopped the run; the image was not judged',
  interrupted: 'interrupted',
};

function mark(s: StageResult): string {
  if (s.status === 'passed') return 'PASS';
  if (s.status === 'failed') return 'FAIL';
  if (s.status === 'error') return 'ERROR';
  return 'SKIP';
}

function secs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

/** The one-line summary of a stage (what it counted or where it ran); '' when there is nothing to say. */
export function stageDetail(s: StageResult): string {
  // A stage that failed before it could count anything (an unreadable image) has no details.
  if (!s.details) return '';
  const d = s.details;
  switch (s.name) {
    case 'readback': return `${d.entries} entries, ${d.files} files`;
    case 'diff': {
      const sockets = (d.socketsLeftOut as string[] | undefined)?.length;
      return `${d.compared} entries compared, ${d.differences} difference${d.differences === 1 ? '' : 's'}${sockets ? `; ${sockets} socket(s) left out (an image cannot hold a live socket)` : ''}`;
    }
    case 'freespace': return `${d.freeMb} MiB free of ${d.sizeMb} MiB`;
    case 'fsck': return String(d.summary ?? '');
    case 'diagnose':
      if (d.mode === 'exec') return `exec mode: ${d.command} (${d.machine})`;
      if (d.mode === 'boot') return `boot: init ${d.init ?? ''} (${d.machine ?? ''})`.replace(' ()', '');
      return 'os-release and usr-merge links (no init in the image, nspawn skipped)';
    case 'nspawn': {
      const vm = d.where === 'vm' ? ' (in the VM)' : '';
      if (d.mode === 'exec') return `exec: ${(d.command as string[]).join(' ')} -> exit ${d.exitCode}${vm}`;
      return d.state ? `booted to ${d.defaultTarget ?? 'the default target'} (${d.defaultTargetState}), system ${d.state}${vm}` : '';
    }
    case 'portable': {
      const states = Object.entries((d.unitStates ?? {}) as Record<string, { active?: string; sub?: string } | string>)
        .map(([u, st]) => (typeof st === 'string' ? `${u} ${st}` : `${u} ${st.active}/${st.sub}`));
      return states.length ? `attached ${d.where === 'host' ? 'on the host' : 'in the VM'}: ${states.join(', ')}` : '';
    }
    case 'portable-lint': return d.prefix ? `prefix ${d.prefix}: ${(d.units as string[] | undefined)?.join(', ') || 'no matching unit'}` : '';
    default: return typeof d.summary === 'string' ? d.summary : '';
  }
}

export function formatTextReport(r: Report): string {
  const width = Math.max(...r.stages.map((s) => s.name.length), 8);
  const markWidth = r.stages.some((s) => s.status === 'error') ? 5 : 4;
  const lines: string[] = [];
  if (r.cause) lines.push(`cause: ${r.cause}`, '');
  for (const s of r.stages) {
    const why = s.status === 'skipped' ? `(${s.skippedBy === 'request' ? 'skipped by request' : s.skippedBy}: ${s.reason})`
      : s.status === 'error' ? `(stopped: ${s.reason ?? 'error'})` : stageDetail(s);
    lines.push(`  ${mark(s).padEnd(markWidth)}  ${s.name.padEnd(width)}  ${secs(s.durationMs).padStart(7)}  ${why}`.trimEnd());
    for (const note of (s.details?.notes as string[] | undefined) ?? []) lines.push(`        note: ${note}`);
    for (const f of s.findings.slice(0, MAX_FINDINGS)) lines.push(`        - [${f.code}] ${f.message.split('\n').join('\n          ')}`);
    for (const w of s.warnings ?? []) lines.push(`        warning: [${w.code}] ${w.message}`);
    if (s.findings.length > MAX_FINDINGS) lines.push(`        ... and ${s.findings.length - MAX_FINDINGS} more (see --report-json)`);
  }
  const total = secs(r.durationMs);
  const warned = r.stages.reduce((n, s) => n + (s.warnings?.length ?? 0), 0);
  const withWarnings = warned ? `, with ${warned} warning${warned > 1 ? 's' : ''}` : '';
  if (r.accepted) lines.push('', `ACCEPTED${r.output ? `: ${r.output}` : ''} (${total}${withWarnings})`);
  else if (r.error) lines.push('', `NO VERDICT: ${VERDICTLESS[r.error.kind]} (exit ${r.error.exitCode}, ${total})`);
  else lines.push('', `REJECTED${r.image ? `: ${r.image}` : ''} (${total})`);
  return `${lines.join('\n')}\n`;
}
