#!/usr/bin/env node
// The executable. The signal handlers come first, before the commands' modules
// load (about half a second), so that a signal at any point exits 130 after
// cleanup instead of killing Node mid-load; cli.js is imported only then.
import { beforeExit, onSignals, wasInterrupted } from './cleanup.js';

// SIGINT, SIGTERM, SIGHUP: cleanup.ts releases everything, then this exits 130.
onSignals((code) => process.exit(code));

const { main } = await import('./cli.js');
const code = await main(process.argv.slice(2));
// process.exit() does not wait for a pipe to take what was written: a large
// manifest piped into `wc -l` lost most of its lines. An empty write's
// callback comes once everything written before it is flushed.
// A reader that closed the pipe early (`| head`) took what it wanted: EPIPE
// ends the waiting, not the process.
const flushed = (stream: NodeJS.WriteStream) =>
  new Promise<void>((done) => {
    stream.once('error', () => done());
    stream.write('', () => done());
  });
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
  });
}
// After a signal, the handler exits once cleanup is done: the work it cut
// short settles first (here) and must not exit before that.
void beforeExit()
  .then(() => Promise.all([flushed(process.stdout), flushed(process.stderr)]))
  .finally(() => wasInterrupted() || process.exit(code));
