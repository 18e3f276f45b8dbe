// Console text as a guest or a container prints it: systemd's colour and
// cursor codes removed, the last lines kept. Shared by the boot probe's
// judge and the VM's error messages.

// eslint-disable-next-line no-control-regex
/** Terminal colour and cursor codes, as systemd prints them on a console. */
export const ANSI = /\x1b\[[0-9;?]*[A-Za-z]/g;

/** The last `n` non-empty console lines, without colour codes. */
export function consoleTail(text: string, n = 25): string[] {
  return text
    .replace(ANSI, '')
    .replace(/\r/g, '')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .slice(-n);
}
