// systemd's own words on the console of a booting container (or VM): the
// lines that say the boot went wrong before any probe can say so. Pure: one
// line in, what it means out; a line buffer for chunks as they arrive. The
// nspawn stage (host path) feeds it nspawn's console as it comes; the VM path
// can feed it the serial console the same way.
//
// Two kinds:
// - final: rescue or emergency mode. The boot will not reach its default
//   target; nothing is gained by waiting, so the boot ends at once.
// - failure: a unit failed ("[FAILED] Failed to start ...", "Dependency
//   failed for ..."). The boot usually goes on and the probe reports the unit
//   with its journal, so these only name the cause when the boot then does
//   not finish.

// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;?]*[A-Za-z]/g;

export type ConsoleWordCode = 'rescue-mode' | 'emergency-mode' | 'default-target-missing' | 'default-target-masked' | 'unit-failed-console' | 'dependency-failed';

export interface ConsoleWord {
  code: ConsoleWordCode;
  /** The line as it was printed (colours and status brackets stripped). */
  line: string;
  /** Ends the boot at once (rescue, emergency). */
  final: boolean;
  /** The unit it names, when the line names one ("foo.service", or the target's description). */
  unit?: string;
}

const UNIT = /^([A-Za-z0-9:_.\\@-]+\.(?:service|socket|target|mount|automount|swap|path|timer|slice|scope|device))(?: - .*)?$/;

/** The unit name of a status line's subject ("foo.service - Foo" -> foo.service), else the description. */
function subject(s: string): string {
  const t = s.trim().replace(/\.$/, '');
  // A name the console shortened ("loca…s.target - Local File Systems") is named by its description.
  return UNIT.exec(t)?.[1] ?? t.replace(/^\S*…\S*\s+-\s+/, '');
}

/** What one console line says, if it is one of systemd's words for a failed boot. */
export function recogniseConsoleLine(raw: string): ConsoleWord | undefined {
  const line = raw.replace(ANSI, '').replace(/\r/g, '').trim();
  if (!line || line.includes('PART-IMAGE-PROBE')) return undefined;
  let m: RegExpExecArray | null;
  // systemd 252 main.c: "Unit default.target not found." then "Falling back to rescue.target."
  if ((m = /Unit (\S+\.target) not found\.?/.exec(line))) return { code: 'default-target-missing', line, final: false, unit: m[1] };
  if ((m = /Unit (\S+\.target) is masked\.?/.exec(line))) return { code: 'default-target-masked', line, final: false, unit: m[1] };
  if ((m = /Falling back to (rescue|emergency)\.target/.exec(line))) return { code: m[1] === 'rescue' ? 'rescue-mode' : 'emergency-mode', line, final: true, unit: `${m[1]}.target` };
  if (/You are in (rescue|emergency) mode/.test(line)) {
    const mode = /rescue/.test(line) ? 'rescue' : 'emergency';
    return { code: `${mode}-mode`, line, final: true, unit: `${mode}.target` };
  }
  if ((m = /Reached target (?:(rescue|emergency)\.target|(Rescue|Emergency) Mode)/.exec(line))) {
    const mode = (m[1] ?? m[2]).toLowerCase() as 'rescue' | 'emergency';
    return { code: `${mode}-mode`, line, final: true, unit: `${mode}.target` };
  }
  if ((m = /Dependency failed for (.+)$/.exec(line))) return { code: 'dependency-failed', line, final: false, unit: subject(m[1]) };
  if ((m = /Failed to start (.+)$/.exec(line))) return { code: 'unit-failed-console', line, final: false, unit: subject(m[1]) };
  if ((m = /^\[\s*FAILED\s*\]\s*(.+)$/.exec(line))) return { code: 'unit-failed-console', line, final: false, unit: subject(m[1].replace(/^Failed to \w+ /, '')) };
  return undefined;
}

/** Splits a console stream into lines and recognises each; keeps what it saw. */
export class ConsoleWords {
  private partial = '';
  readonly seen: ConsoleWord[] = [];

  /** Feed a chunk; returns the words of the lines it completed. */
  feed(chunk: string): ConsoleWord[] {
    const text = this.partial + chunk;
    const lines = text.split('\n');
    this.partial = lines.pop() ?? '';
    const found: ConsoleWord[] = [];
    for (const l of lines) {
      const w = recogniseConsoleLine(l);
      if (w) found.push(w);
    }
    this.seen.push(...found);
    return found;
  }

  /** The word that best explains a boot that did not finish: a final one, else the first failure. */
  cause(): ConsoleWord | undefined {
    return this.seen.find((w) => w.final) ?? this.seen.find((w) => w.code.startsWith('default-target-')) ?? this.seen[0];
  }
}

/** Recognise every line of a whole console text (for a run that was not watched live). */
export function consoleWordsOf(text: string): ConsoleWords {
  const w = new ConsoleWords();
  w.feed(`${text}\n`);
  return w;
}
