#!/usr/bin/env node
// The executable. The signal handlers come first, before the commands' modules
// load (about half a second), so that a signal at any point exits 130 after
// cleanup instead of killing Node mid-load; cli.js is imported only then.
import { beforeExit, onSignals, wasInterrupted } from './cleanup.js';

// SIGINT, SIGTERM, SIGHUP: cleanup.ts releases everything, then this exits 130.
onSignals((code) => process.exit(code));

const { main } = await import('./cli.js');
const code = await main(process.argv.slice(2));
// After a signal, the handler exits once cleanup is done: the work it cut
// short settles first (here) and must not exit before that.
void beforeExit().finally(() => wasInterrupted() || process.exit(code));
