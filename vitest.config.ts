import { defineConfig } from 'vitest/config';

// The tests that boot the part-image VM run under TCG here (KVM does not run
// guests on this machine type): CPU-bound, and slowed 2-3 times when the
// fault matrix builds Debian roots beside them, or when two VMs share the two
// cores; under that load the Debian boot in the VM failed in two CI runs and
// passed alone. So they form a second group, one file at a time, that starts
// once the first group is done.
const VM_TESTS = ['test/nspawn-vm.test.ts', 'test/portable.test.ts', 'test/vm.test.ts', 'test/faults/vm-cache.test.ts'];

const shared = {
  // Real-tool tests build and boot real images; one core must stay free for
  // the tools themselves on a 2-core machine.
  fileParallelism: true,
  maxWorkers: 2,
  testTimeout: 120_000,
  hookTimeout: 600_000,
};

export default defineConfig({
  test: {
    ...shared,
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
