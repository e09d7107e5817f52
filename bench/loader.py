"""Data-loader throughput: CamVid's training loader alone, img/s with `num_workers` 0, 1 and 2, with the
shared item cache (`ItemCache`: decoded, resized items in one memory map per data set) and without it (`cache_mb=0`:
every image and mask decoded and resized again in every epoch, in every worker, as fastai does).

Data: CamVid (../shared/data/camvid: 367 training frames of 360×480; generated frames of that size when it is absent),
resized to --size (the recipe's 180×240 by default), batch --bs, fastai's batch augmentation on the CPU (on a GPU it
runs there). Each configuration runs in a fresh process (its own peak RSS, its workers' included) with a fresh cache
folder, so its "build" time includes writing the cache; the configurations alternate over --rounds and the median is
reported, with the ratio against workers 0 without the cache. The batches with and without the cache are the same
(tested in nbs/12_data.blocks.ipynb); this script checks it again for the first batch of each worker count.

    python bench/loader.py [--size 180 240] [--bs 8] [--workers 0 1 2] [--epochs 2] [--rounds 2] [--data DIR]
"""
import argparse, json, statistics, subprocess, sys, tempfile, time
from pathlib import Path

CAMVID = Path(__file__).resolve().parents[1].parent/'shared'/'data'/'camvid'

def write_frames(root, n_train:int=367, n_valid:int=101, hw=(360, 480), classes:int=12, seed:int=0)->Path:
    """Generated street-like frames in CamVid's SegNet layout (train/, trainannot/, val/, valannot/, codes.txt; the last
    class is Void): rectangles of random classes, each class its own colour plus noise, so a U-Net can learn them"""
    import numpy as np
    from PIL import Image
    root, rng = Path(root), np.random.default_rng(seed)
    palette = rng.integers(0, 256, (classes, 3))
    (root/'codes.txt').parent.mkdir(parents=True, exist_ok=True)
    (root/'codes.txt').write_text('\n'.join([f'class{i}' for i in range(classes - 1)] + ['Void']) + '\n')
    for split, n in (('train', n_train), ('val', n_valid)):
        (root/split).mkdir(exist_ok=True); (root/f'{split}annot').mkdir(exist_ok=True)
        for i in range(n):
            m = np.full(hw, rng.integers(classes - 1), np.uint8)
            for _ in range(12):
                y, x = rng.integers(0, hw[0]), rng.integers(0, hw[1])
                m[y:y + rng.integers(8, hw[0] // 2), x:x + rng.integers(8, hw[1] // 2)] = rng.integers(classes)
            img = np.clip(palette[m] + rng.normal(0, 24, (*hw, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root/split/f'{i:04d}.png'); Image.fromarray(m).save(root/f'{split}annot'/f'{i:04d}.png')
    return root

def camvid_or_frames(work:Path, data=None, hw=(360, 480), n=(367, 101))->Path:
    "--data, else ../shared/data/camvid, else frames generated in `work`"
    if data: return Path(data)
    if CAMVID.is_dir(): return CAMVID
    print(f"{CAMVID} not found: generated frames instead")
    return write_frames(work/'frames', *n, hw=hw)

CHILD = r'''
import json, re, resource, sys, time, warnings
warnings.filterwarnings('ignore')
import torch
from fastai.vision.all import set_seed
from unet_fastai.data.blocks import camvid_dls
data, size, bs, workers, cache, epochs, cache_dir = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == '1', int(sys.argv[6]), sys.argv[7]
t = time.perf_counter()
set_seed(0)
dls = camvid_dls(data, size=tuple(size), bs=bs, num_workers=workers, cache_mb=4096 if cache else 0, cache_dir=cache_dir)
build = time.perf_counter() - t
rates = []
for e in range(epochs):
    t, n = time.perf_counter(), 0
    for i, (xb, yb) in enumerate(dls.train):
        n += len(xb)
        if e == 0 and i == 0: first = [torch.Tensor(xb).clone(), torch.Tensor(yb).clone()]
    rates.append(n / (time.perf_counter() - t))
hwm = int(re.search(r'VmHWM:\s+(\d+) kB', open('/proc/self/status').read())[1]) / 1024
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
torch.save(first, cache_dir + '/first.pt')
print(json.dumps(dict(build=build, rates=rates, rss_mb=hwm, worker_rss_mb=kids,
                      cache_mb=sum(c.data.nbytes for c in dls.caches if c.data is not None) / 2**20)))
'''

def run(data, size, bs, workers, cache, epochs, work)->dict:
    "One configuration in a fresh process with a fresh cache folder; its first batch kept for the comparison"
    d = Path(tempfile.mkdtemp(dir=work))
    r = subprocess.run([sys.executable, '-c', CHILD, str(data), json.dumps(list(size)), str(bs), str(workers), str(int(cache)),
                        str(epochs), str(d)], capture_output=True, text=True)
    if r.returncode: raise SystemExit(r.stderr[-3000:])
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out['first'] = d/'first.pt'
    return out

def same_batch(a:Path, b:Path)->bool:
    import torch
    x, y = torch.load(a), torch.load(b)
    return all(bool((p == q).all()) for p, q in zip(x, y))

def main(size=(180, 240), bs=8, workers=(0, 1, 2), epochs=2, rounds=2, data=None):
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        data = camvid_or_frames(work, data)
        configs = [(w, c) for w in workers for c in (False, True)]
        results = {k: [] for k in configs}
        for r in range(rounds):
            for w, c in configs:
                results[(w, c)].append(run(data, size, bs, w, c, epochs, work))
                o = results[(w, c)][-1]
                print(f"round {r + 1}: workers {w}, cache {'on ' if c else 'off'}: build {o['build']:.1f} s, "
                      f"epochs {' '.join(f'{x:.0f}' for x in o['rates'])} img/s", flush=True)
        med = lambda k, f: statistics.median(f(o) for o in results[k])
        base = med((workers[0], False), lambda o: statistics.median(o['rates']))
        print(f"\n{data}: {size[0]}×{size[1]}, bs {bs}, {epochs} epochs a run, median of {rounds} runs; ratio against "
              f"workers {workers[0]} without the cache")
        print("| workers | cache | build (s) | loader img/s | ratio | cache MB | peak RSS MB (main / a worker) |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for w, c in configs:
            rate = med((w, c), lambda o: statistics.median(o['rates']))
            print(f"| {w} | {'on' if c else 'off'} | {med((w, c), lambda o: o['build']):.1f} | {rate:.0f} | {rate / base:.2f}× | "
                  f"{med((w, c), lambda o: o['cache_mb']):.0f} | {med((w, c), lambda o: o['rss_mb']):.0f} / " +
                  (f"{med((w, c), lambda o: o['worker_rss_mb']):.0f}" if w else '—') + ' |')
        same = all(same_batch(results[(w, False)][0]['first'], results[(w, True)][0]['first']) for w in workers)
        print(f"first training batch the same with and without the cache, for every worker count: {same}")
        if not same: raise SystemExit(1)

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--size', type=int, nargs=2, default=[180, 240])
    p.add_argument('--bs', type=int, default=8)
    p.add_argument('--workers', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--epochs', type=int, default=2)
    p.add_argument('--rounds', type=int, default=2)
    p.add_argument('--data', help="a CamVid folder (default: ../shared/data/camvid, else generated frames)")
    a = p.parse_args()
    main(tuple(a.size), a.bs, tuple(a.workers), a.epochs, a.rounds, a.data)
