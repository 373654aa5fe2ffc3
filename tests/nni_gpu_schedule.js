// Ask NNI 3.0's own GPU scheduler (the trial keeper's TaskScheduler, used by the local
// and remote training services) where it would put trials, on a machine with fake GPUs.
// No GPU, no nvidia-smi needed: NNI's UnitTestHelpers replace its GPU probe.
//
//   NODE_PATH=<nni_node>:<nni_node>/node_modules <nni_node>/node tests/nni_gpu_schedule.js '<json>'
//   json: {"gpus": 1, "trialGpuNumber": 1, "maxTrialNumberPerGpu": 2, "gpuIndices": [0],
//          "useActiveGpu": false, "busyGpus": [], "trials": 3}
// Prints a JSON list, one entry per trial: its CUDA_VISIBLE_DEVICES, null if NNI would
// not start it (it keeps waiting for a GPU), or {"error": ...} if NNI's scheduler throws.
require('common/globals/unittest').resetGlobals();
const { TaskScheduler, UnitTestHelpers } = require('common/trial_keeper/task_scheduler/scheduler');

async function main() {
  const spec = JSON.parse(process.argv[2]);
  UnitTestHelpers.mockGpuInfo({
    success: true,
    gpuNumber: spec.gpus,
    gpus: [...Array(spec.gpus).keys()].map(index => ({ index, gpuCoreUtilization: 0, gpuMemoryUtilization: 0 })),
    processes: (spec.busyGpus || []).map(gpuIndex => ({ gpuIndex, type: 'compute' })),
  });
  const scheduler = new TaskScheduler();
  await scheduler.init();
  // As local_v3/remote_v3 createTrial(): the request is divided by maxTrialNumberPerGpu.
  const gpuNumber = spec.trialGpuNumber / (spec.maxTrialNumberPerGpu || 1);
  const restrictions = { onlyUseIndices: spec.gpuIndices ?? undefined, rejectActive: !spec.useActiveGpu };
  const result = [];
  for (let i = 0; i < spec.trials; i++) {
    try {
      const env = await scheduler.schedule('exp', `trial${i}`, gpuNumber, restrictions);
      result.push(env === null ? null : env.CUDA_VISIBLE_DEVICES);
    } catch (err) {  // NNI 3.0 throws when every allowed GPU is busy and the request is fractional
      result.push({ error: String(err) });
    }
  }
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}

main().catch(err => { console.error(err); process.exit(1); });
