"""Training on one process against two (DDP over gloo) on this CPU, for the same global batch.

Road tiles of generated scenes, the default U-Net (ResNet34 encoder, lean decoder, channels_last, fp32) trained by
fastai's Learner inside `unet_fastai.train.distributed.distributed` exactly as `unet_fastai_train` trains it. Each
configuration runs in fresh processes: one process with the global batch (torch's default threads: one per core), and
`torchrun --nproc_per_node 2` with half the batch each (torchrun gives each process one thread). The runs alternate
(1, 2, 1, 2, ...); the median seconds per training step (data, forward, backward, gradient all-reduce, optimizer;
after a few warm-up steps, validation skipped) give the images per second.

The gradient all-reduce is timed two ways in the 2-process runs: (a) a DDP communication hook records, for every
bucket, the time from the bucket's gradients being ready to its all-reduce being done, summed per step (it overlaps
the rest of the backward pass, and includes waiting for the slower process); (b) one all-reduce of a flat tensor as
large as all the gradients, outside training (the pure cost of moving them). No speed-up is expected with 2 cores:
two processes share the cores one process already uses.

    python bench/distributed.py [--bs 8] [--steps 20] [--rounds 2]
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time, warnings
from pathlib import Path

def worker(data, bs, steps, warmup, out):
    "One training run (a process of it): seconds per step, and the all-reduce times when distributed"
    warnings.filterwarnings('ignore')
    import torch, torch.distributed as dist
    from fastai.callback.core import Callback, CancelFitException, CancelValidException
    from unet_fastai.data.blocks import roads_dls
    from unet_fastai.train.learner import seg_learner
    from unet_fastai.train.distributed import init_distributed, distributed, is_main
    n = init_distributed()
    learn = seg_learner(roads_dls(data, bs=bs), pretrained=False, path=Path(out).parent)
    bucket_s = []

    def timed_allreduce(state, bucket):  # DDP's default hook (average over the processes), timed
        t0, buf = time.perf_counter(), bucket.buffer()
        def done(fut):
            bucket_s.append(time.perf_counter() - t0)
            return fut.value()[0].div_(dist.get_world_size())
        return dist.all_reduce(buf, async_op=True).get_future().then(done)

    class Timer(Callback):
        order = 12  # after fastai's DistributedTrainer has wrapped the model
        def before_fit(self):
            self.t, self.steps, self.reduce = None, [], []
            if n > 1: self.learn.model.register_comm_hook(None, timed_allreduce)
        def before_validate(self): raise CancelValidException
        def after_batch(self):
            now = time.perf_counter()
            if self.t is not None: self.steps.append(now - self.t); self.reduce.append(sum(bucket_s))
            self.t = now; bucket_s.clear()
            if len(self.steps) >= warmup + steps: raise CancelFitException
    timer = Timer()
    with distributed(learn): learn.fit(100, 1e-3, cbs=timer)
    res = dict(processes=n, bs=bs, global_bs=bs * n, threads=torch.get_num_threads(),
               step_s=statistics.median(timer.steps[warmup:]))
    if n > 1:
        res['allreduce_in_step_s'] = statistics.median(timer.reduce[warmup:])
        flat = torch.zeros(sum(p.numel() for p in learn.model.parameters()))
        times = []
        for _ in range(5):
            dist.barrier(); t0 = time.perf_counter(); dist.all_reduce(flat); times.append(time.perf_counter() - t0)
        res.update(allreduce_flat_s=statistics.median(times), grad_floats=flat.numel())
        dist.destroy_process_group()
    if is_main(): Path(out).write_text(json.dumps(res))

def main(bs=8, steps=20, rounds=2, warmup=3):
    warnings.filterwarnings('ignore')
    from unet_fastai.data.synthetic import write_scenes
    from unet_fastai.data.prepare import prepare
    bin_ = Path(sys.executable).parent
    with tempfile.TemporaryDirectory(prefix='bench_distributed_') as root:
        root = Path(root)
        write_scenes(root/'scenes', n=6, size=512)
        prepare(root/'scenes', root/'prep', size=512, tile=128, workers=0, progress=False)  # 96 tiles, 80 to train on
        runs = {1: [], 2: []}
        for r in range(rounds):
            for n in (1, 2):
                out = root/f'r{r}_{n}.json'
                args = [__file__, '--worker', str(root/'prep'), '--bs', str(bs // n), '--steps', str(steps), '--out', str(out)]
                cmd = [sys.executable, *args] if n == 1 else [str(bin_/'torchrun'), '--standalone', '--nproc_per_node', '2', *args]
                p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, 'TMPDIR': str(root)})  # torchrun's logs
                if p.returncode: sys.exit(f"{n}-process run failed:\n{p.stderr[-3000:]}")
                runs[n].append(json.loads(out.read_text()))
    one, two = ({k: statistics.median(r[k] for r in runs[n]) for k in runs[n][0]} for n in (1, 2))
    print(f"road tiles of 128x128, lean U-Net (ResNet34), fp32, global batch {bs}, {steps} steps after {warmup} warm-up, "
          f"{rounds} rounds, median")
    print(f"{'processes':>9} {'bs each':>8} {'threads each':>12} {'s/step':>7} {'img/s':>7}")
    for r in (one, two): print(f"{r['processes']:>9.0f} {r['bs']:>8.0f} {r['threads']:>12.0f} {r['step_s']:>7.3f} {bs / r['step_s']:>7.2f}")
    print(f"2 processes / 1 process: {one['step_s'] / two['step_s']:.2f}x the images per second")
    mb = two['grad_floats'] * 4 / 1e6
    print(f"gradient all-reduce, 2 processes (gloo), {two['grad_floats'] / 1e6:.1f} M floats ({mb:.0f} MB) a step: "
          f"{two['allreduce_in_step_s']:.3f} s per step in training (buckets, summed: "
          f"{two['allreduce_in_step_s'] / two['step_s']:.0%} of a step, overlapping the backward pass); "
          f"{two['allreduce_flat_s']:.3f} s for one all-reduce of them all alone")

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--bs', type=int, default=8, help='global batch')
    ap.add_argument('--steps', type=int, default=20, help='timed steps per run')
    ap.add_argument('--rounds', type=int, default=2)
    ap.add_argument('--worker', help=argparse.SUPPRESS)
    ap.add_argument('--out', help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker: worker(a.worker, a.bs, a.steps, 3, a.out)
    else: main(a.bs, a.steps, a.rounds)
