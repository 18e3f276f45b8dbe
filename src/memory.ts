// Letting go of memory between the phases of a large run. V8 grows its heap
// to a few times what was live after its last full collection, and it does
// not collect again until that much is allocated: reading 100,000 inodes
// made 5 times the live heap in garbage before the next collection. A full
// collection where a phase drops what it built (a level of the image reader,
// the input's staged contents) keeps the heap near what is live.
//
// The collection is V8's own (the one --expose-gc gives), taken at run time
// the way jest's leak detector takes it.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

let gc: (() => void) | undefined;

/** A full garbage collection, for a point where much was let go (at most a few per run: each takes tens of ms). */
export function collectGarbage(): void {
  if (!gc) {
    setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as () => void;
  }
  gc();
}
