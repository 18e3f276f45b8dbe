import { defineConfig } from 'vitest/config';

// The tests that boot the part-image VM run under TCG here (KVM does not run
// guests on this machine type): CPU-bound, and slowed 2-3 times when the
// fault matrix builds Debian roots beside them, or when two VMs share the two
// cores; under that load the Debian boot in the VM failed in two CI runs and
// passed alone. So they form a second group, one file at a time, that starts
// once the first group is done.
const VM_TESTS = ['test/nspawn-vm.test.ts', 'test/portable.test.ts', 'test/vm.test.ts', 'test/faults/vm-cache.test.ts'];

// `npm run coverage` (test/helpers/coverage.mjs) sets PART_IMAGE_CHILD_V8 to a
// folder: every process the tests spawn then inherits NODE_V8_COVERAGE and
// writes its V8 coverage there when it exits (the CLI runs that must stay
// child processes: signals, exit codes of the real process, other users). The
// vitest processes themselves are measured by the v8 provider below.
const childV8 = process.env.PART_IMAGE_CHILD_V8;

const shared = {
  env: childV8 ? { NODE_V8_COVERAGE: childV8 } : {},
  // Real-tool tests build and boot real images; one core must stay free for
  // the tools themselves on a 2-core machine.
  fileParallelism: true,
  maxWorkers: 2,
  // The longest tests boot a VM under TCG or build and boot a Debian image:
  // 30-48 s each on a quiet machine of this kind, and CI machines have been
  // up to 2.5 times slower. A timeout is not what these tests check (their
  // bounds on the product are asserted inside them), so it leaves room.
  testTimeout: 300_000,
  hookTimeout: 600_000,
};

export default defineConfig({
  test: {
    ...shared,
    coverage: {
      provider: 'v8',
      include: ['src/**/*.ts'],
      // Only the raw in-process part: test/helpers/coverage.mjs adds the child
      // processes' part, prints lines, branches and functions, and enforces the threshold.
      reporter: [['json', { file: 'coverage-final.json' }]],
      reportsDirectory: 'coverage/in-process',
      // A failed test must not hide the figures (vitest writes none by default then).
      reportOnFailure: true,
    },
    projects: [
      {
        test: {
          ...shared, name: 'tools', include: ['test/**/*.test.ts'], exclude: VM_TESTS, sequence: { groupOrder: 0 },
          benchmark: { include: ['test/bench/**/*.bench.ts'], exclude: ['test/bench/vm.bench.ts'] },
        },
      },
      // The VM bench runs alone after the others: TCG timings mean nothing beside another bench.
      { test: { ...shared, name: 'vm', include: VM_TESTS, fileParallelism: false, sequence: { groupOrder: 1 }, benchmark: { include: ['test/bench/vm.bench.ts'] } } },
    ],
  },
});
