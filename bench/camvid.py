"""CamVid from scratch on this CPU: train on ../shared/data/camvid train (367), validate on val (101), over seeds and recipes.

Each configuration is `train_camvid`'s default with some options changed (`--configs`, each a string of key=value;
`default` changes nothing; `model=smp` trains segmentation_models_pytorch's `Unet("resnet34")` with the same recipe).
Every configuration of a seed sees the same batches and augmentation: `train_segmentation` seeds the batches after
building the model, so a model that draws more random numbers does not change them. Prints per run the pixel accuracy
without void, mIoU and the classes left at IoU 0 (validation, best epoch by mIoU); then per configuration the mean and
spread over seeds, and the time to quality: wall-clock minutes from the start of training (validation included) until
the validation mIoU first reaches 0.35 and 0.45. `--curve F.png` draws mIoU against those minutes.
The default 10 epochs are the 3-minute budget on the 2-core CPU (an epoch: about 16 s on the machine of the published figures, 33 s on
an earlier one; the first run on the data takes a few seconds more to make the loaders, while the item cache is written).
These are from-scratch CPU runs (no ImageNet weights); the reference's 93 % accuracy is with a pretrained ResNet34 at
full size on a GPU. `model=smp` needs the bench extra: pip install -e ".[bench]".

    python bench/camvid.py [--configs default init=fastai "loss=ce class_weights=None" model=smp "budget=15m epochs=None" ...]
                           [--seeds 0 1 2 3 4 5] [--size 96 128] [--bs 8] [--epochs 10] [--lr 2e-3] [--curve F.png]
"""
import argparse, contextlib, io, statistics, tempfile, time, warnings
from pathlib import Path
from fastai.callback.core import Callback
from unet_fastai.core import console_progress
from unet_fastai.train.loop import train_camvid, evaluate
from unet_fastai.train.pictures import read_history
THRESHOLDS = (0.35, 0.45)

class EpochClock(Callback):
    "Seconds from the start of the first fit to the end of each epoch (validation included)"
    order = 100
    def __init__(self): self.t0, self.ends = None, []
    def before_fit(self): self.t0 = self.t0 or time.perf_counter()
    def after_epoch(self): self.ends.append(time.perf_counter() - self.t0)

def parse_config(s:str)->dict:
    "'default' → {}; 'loss=ce+dice lr=4e-3' → {'loss': 'ce+dice', 'lr': 0.004}"
    out = {}
    for kv in s.split():
        if kv == 'default': continue
        k, v = kv.split('=', 1)
        for conv in (int, float): 
            try: v = conv(v); break
            except ValueError: pass
        out[k] = {'None': None, 'True': True, 'False': False}.get(v, v) if isinstance(v, str) else v
    return out

def minutes_to(miou:list, ends:list, level:float):
    "Minutes until the mIoU of an epoch first reaches `level` (None: never)"
    return next((t / 60 for m, t in zip(miou, ends) if m >= level), None)

def run(data, cfg:dict, seed:int, size, bs, epochs, lr, out):
    opts = dict(size=tuple(size), bs=bs, epochs=epochs, lr=lr, pretrained=False)
    opts.update(cfg)
    if opts.get('model') == 'smp':
        import segmentation_models_pytorch as smp
        opts['model'] = smp.Unet('resnet34', encoder_weights=None, classes=12)
    clock = EpochClock()
    t = time.perf_counter()
    with console_progress(False), contextlib.redirect_stdout(io.StringIO()):  # no bars, no table of epochs
        learn = train_camvid(data, out=out, train_seed=seed, cbs=[clock], **opts)
    wall = time.perf_counter() - t
    ev, h = evaluate(learn), read_history(Path(out)/'history.csv')
    return dict(wall=wall, accuracy=ev['accuracy'], mIoU=ev['mIoU'], zero=sum(v == 0 for v in ev['iou'].values()), iou=ev['iou'],
                curve=list(zip(clock.ends, h['mIoU'])), n_train=len(learn.dls.train_ds), epochs=len(h))

def spread(v): return f"{statistics.mean(v):.3f} ± {statistics.stdev(v) if len(v) > 1 else 0:.3f}"

def plot(results:dict, path):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, runs) in enumerate(results.items()):
        for j, r in enumerate(runs):
            t, m = zip(*r['curve'])
            ax.plot([v / 60 for v in t], m, '-o', color=f'C{i}', alpha=0.6, ms=3, label=name if j == 0 else None)
    for level in THRESHOLDS: ax.axhline(level, color='grey', ls='--', lw=1)
    ax.set_xlabel('wall-clock minutes (this CPU, validation included)'); ax.set_ylabel('validation mIoU'); ax.legend(fontsize=8)
    ax.set_title('CamVid from scratch: time to quality (one line per seed)')
    fig.tight_layout(); fig.savefig(path, dpi=80); print(f"curve: {path}")

def main(configs=('default',), seeds=(0,), size=(96, 128), bs=8, epochs=10, lr=2e-3, data='../shared/data/camvid', curve=None):
    warnings.filterwarnings('ignore')
    print(f"CamVid from scratch, size {size[0]}x{size[1]}, bs {bs}, {epochs} epochs, lr {lr}, seeds {list(seeds)}, "
          f"the same batches for every configuration of a seed", flush=True)
    results = {c: [] for c in configs}
    for seed in seeds:
        for c in configs:
            with tempfile.TemporaryDirectory(prefix='bench_camvid_') as out:
                r = run(data, parse_config(c), seed, size, bs, epochs, lr, out)
            results[c].append(r)
            print(f"[{c}] seed {seed}: acc {r['accuracy']:.3f}  mIoU {r['mIoU']:.3f}  classes at IoU 0: {r['zero']}  "
                  f"{r['epochs']} epochs, wall {r['wall']:.0f} s ({r['n_train'] * r['epochs'] / r['wall']:.2f} img/s)  "
                  f"IoU: {', '.join(f'{k} {v:.2f}' for k, v in r['iou'].items())}", flush=True)
    print(f"\n| configuration | mIoU (mean ± sd over {len(seeds)} seeds) | accuracy | classes at 0 (mean) | wall s | "
          + ' | '.join(f'min to {l}' for l in THRESHOLDS) + ' |')
    print('| --- ' * (5 + len(THRESHOLDS)) + '|')
    for c, runs in results.items():
        reach = []
        for l in THRESHOLDS:
            t = [minutes_to([m for _, m in r['curve']], [s for s, _ in r['curve']], l) for r in runs]
            reach.append(f"{statistics.mean(t):.1f}" if all(v is not None for v in t) else f"{sum(v is not None for v in t)}/{len(t)} reach")
        print(f"| {c} | {spread([r['mIoU'] for r in runs])} | {spread([r['accuracy'] for r in runs])} | "
              f"{statistics.mean(r['zero'] for r in runs):.1f} | {statistics.mean(r['wall'] for r in runs):.0f} | " + ' | '.join(reach) + ' |')
    if curve: plot(results, curve)
    return results

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--configs', nargs='+', default=['default'], help="each a string of key=value options of train_camvid, "
                    "or 'default'; model=smp trains smp's Unet")
    ap.add_argument('--seeds', type=int, nargs='+', default=[0])
    ap.add_argument('--size', type=int, nargs=2, default=[96, 128]); ap.add_argument('--bs', type=int, default=8)
    ap.add_argument('--epochs', type=int, default=10, help='10: the 3-minute budget on the 2-core CPU'); ap.add_argument('--lr', type=float, default=2e-3)
    ap.add_argument('--data', default='../shared/data/camvid')
    ap.add_argument('--curve', default=None, help='write the time-to-quality curve to this PNG')
    main(**vars(ap.parse_args()))
