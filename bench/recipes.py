"""Training recipes cross-validated over every reference data set, each scored with its reference's own figures.

Data sets (../shared/data; a missing one is skipped, saying so): CamVid (train + val pooled, 468 frames; folds by drive:
0001TP + 0006R0, then the first and the second half of 0016E5 in time, so frames of one drive never sit on both
sides), Cityscapes pairs (train + val pooled, 400; folds by blocks of the numbered frames, which follow the cities),
Penn-Fudan (43 photos), Oxford-IIIT Pet with the border ignored (42), its dog subset (14; one channel, BCE + Dice),
BSDS500 (10; BCE + Dice) and the 21 real Massachusetts Roads scenes (white no-data void, 2 m/pixel, 128² tiles; folds
by scene). Each is trained from scratch (`pretrained=False`, every layer at `lr`) for its stated CPU budget below.

Scoring: k-fold cross-validation (`--folds`, 3): every fold is validated once by a model trained on the others; fold f
is trained with seed `--seed` + f, and every configuration of a fold sees the same batches (`train_segmentation` seeds
the batches after building the model). The figures are the kept (best-epoch) model's on the fold: CamVid and
Cityscapes accuracy without void and mIoU (CamVid also the classes left at IoU 0), Penn-Fudan and Pets mIoU, dogs Dice,
BSDS500 relaxed ODS (rho 2), roads relaxed breakeven (rho 3) and road IoU (p >= 0.5); mean ± sd over the folds.

Configurations (`--configs`, options of `seg_learner`): `default` is the package's default now (since this bench chose
it: cross-entropy with the square root of the median-frequency weights + Dice, the same as `sqrt`); `de45657` the
earlier default (cross-entropy with the median-frequency weights + Dice); `ce` plain cross-entropy (the loss of
074c375, with today's init and schedule); `median-ce` median-frequency weights without Dice. Configurations that come to
the same loss are trained once and reported under each name; dogs and BSDS500 train with their own BCE + Dice loss,
so only `default` runs there.

Regression guard: `--save` writes each data set's rows to bench/recipes.csv (committed; the mean, sd and per-fold values
of every figure), and every run prints each figure's change against that file, so a later change of recipe shows its cost on every data set, not on one split.

    python bench/recipes.py [--quick] [--only camvid,cityscapes,pennfudan,pets,dogs,bsds500,roads]
                            [--configs default de45657 ce sqrt] [--folds 3] [--seed 0] [--save] [--work DIR]

The default run takes about 55 minutes on this 2-core CPU; `--quick` (fold 0 only, half the epochs) a few minutes.
"""
import argparse, contextlib, csv, io, os, statistics, tempfile, time, warnings
from contextlib import nullcontext
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent/'shared'/'data'
CSV = Path(__file__).with_name('recipes.csv')
CONFIGS = {'default': {}, 'de45657': dict(loss='ce+dice', class_weights='median'), 'ce': dict(loss='ce', class_weights=None),
           'sqrt': dict(loss='ce+dice', class_weights='sqrt-median'), 'median-ce': dict(loss='ce', class_weights='median')}
PREVIOUS = ('de45657', 'ce')  # the two previous defaults' losses: a new default may not lose more than a sd against the better

def _folds(groups:dict, k:int)->list:
    "k lists of groups, balanced by item count (largest group first into the smallest fold)"
    folds = [[] for _ in range(k)]
    size = lambda f: sum(groups[g] for g in f)
    for g in sorted(groups, key=lambda g: (-groups[g], g)): min(folds, key=size).append(g)
    return folds

class Spec:
    "A data set: its items' groups, its DataLoaders for a set of validation groups, the task's own training options"
    own_loss, configs = False, ('default', 'de45657', 'ce')
    def __init__(self, work:Path): self.work = work

def _count(keys): return {k: keys.count(k) for k in sorted(set(keys))}

class CamVid(Spec):
    name, budget, epochs, keys, size = 'camvid', '96×128, bs 8, 4 epochs', 4, ('accuracy', 'mIoU', 'zero'), (96, 128)
    def available(self): return (DATA/'camvid'/'train').is_dir()
    def setup(self):
        from unet_fastai.data.blocks import camvid_pairs, read_codes
        self.pairs, _ = camvid_pairs(DATA/'camvid')
        self.codes, self.void = read_codes(DATA/'camvid')
        late = sorted(p[0].stem for p in self.pairs if p[0].stem.startswith('0016E5'))
        half = set(late[len(late) // 2:])
        self.group = {p[0]: ('0016E5 second half' if p[0].stem in half else '0016E5 first half') if p[0].stem.startswith('0016E5')
                      else p[0].stem.split('_')[0] for p in self.pairs}
        return _count(list(self.group.values()))
    def dls(self, valid):
        from unet_fastai.data.blocks import segmentation_dls
        return segmentation_dls(self.pairs, [self.group[i] in valid for i, _ in self.pairs], self.codes, void=self.void,
                                mask_map='identity', size=self.size, bs=8, aug='street')
    def train_opts(self, dls): return {}

class Cityscapes(CamVid):
    name, budget, epochs, keys, size = 'cityscapes', '128², bs 8, 3 epochs', 3, ('accuracy', 'mIoU', 'zero'), (128, 128)
    def available(self): return (DATA/'cityscapes_pairs'/'train').is_dir()
    def setup(self):
        from unet_fastai.datasets.cityscapes import prepare_cityscapes, CITYSCAPES_CODES, CITYSCAPES_VOID
        prep = self.work/'cityscapes'
        prepare_cityscapes(DATA/'cityscapes_pairs', prep, progress=False)
        self.codes, self.void = CITYSCAPES_CODES, CITYSCAPES_VOID
        self.pairs = [(prep/s/'images'/m.name, m) for s in ('train', 'val') for m in sorted((prep/s/'masks').glob('*.png'))]
        self.group = {i: 'val' if i.parts[-3] == 'val' else f"train {'1-150' if int(i.stem) <= 150 else '151-300'}" for i, _ in self.pairs}
        return _count(list(self.group.values()))

class Photos(Spec):
    "A folder of photos, one group each, through the task's own `*_dls` (valid_scenes: the fold)"
    def setup(self):
        from unet_fastai.data.blocks import scene_of
        d = self.dls(None)
        return _count([scene_of(p) for p in list(d.train_ds.items) + list(d.valid_ds.items)])

class PennFudan(Photos):
    name, budget, epochs, keys = 'pennfudan', '160×128, bs 4, 15 epochs', 15, ('accuracy', 'mIoU')
    def available(self): return (DATA/'pennfudan'/'PNGImages').is_dir()
    def dls(self, valid):
        from unet_fastai.datasets.pennfudan import pennfudan_dls
        return pennfudan_dls(DATA/'pennfudan', bs=4, valid_scenes=valid)
    def train_opts(self, dls):
        from unet_fastai.train.metrics import acc_novoid, miou, dice
        return dict(metrics=[acc_novoid(2), miou(2), dice()])

class Pets(Photos):
    name, budget, epochs, keys, dogs = 'pets', '128², bs 4, 15 epochs, border ignored', 15, ('accuracy', 'mIoU'), False
    def available(self): return (DATA/'oxford_pets'/'images').is_dir()
    def dls(self, valid):
        from unet_fastai.datasets.pets import pets_dls
        return pets_dls(DATA/'oxford_pets', border='ignore' if not self.dogs else 'pet', dogs_only=self.dogs,
                        size=150 if self.dogs else 128, bs=4, valid_scenes=valid)
    def train_opts(self, dls):
        from unet_fastai.train.metrics import acc_novoid, miou, dice
        from unet_fastai.train.losses import BCEDiceLoss
        extra = dict(n_out=1, loss_func=BCEDiceLoss(void=dls.void)) if self.dogs else {}
        return dict(metrics=[acc_novoid(2, dls.void), miou(2, dls.void), dice(dls.void)], monitor='dice', **extra)

class Dogs(Pets):
    name, budget, epochs, keys, dogs, own_loss = 'dogs', '150², bs 4, 25 epochs, 1 channel BCE + Dice', 25, ('dice',), True, True

class BSDS500(Photos):
    name, budget, epochs, keys, own_loss = 'bsds500', 'half size, crops of 160, bs 4, 30 epochs, 1 channel BCE + Dice', 30, ('ods',), True
    def available(self): return (DATA/'bsds500'/'images').is_dir()
    def setup(self):
        from unet_fastai.datasets.bsds500 import prepare_bsds500
        prepare_bsds500(DATA/'bsds500', self.work/'bsds', progress=False)
        return super().setup()
    def dls(self, valid):
        from unet_fastai.datasets.bsds500 import bsds500_dls
        return bsds500_dls(self.work/'bsds', size=160, bs=4, valid_scenes=valid)
    def train_opts(self, dls):
        from unet_fastai.train.metrics import dice, RelaxedMetric
        from unet_fastai.train.losses import BCEDiceLoss
        return dict(n_out=1, loss_func=BCEDiceLoss(), metrics=[dice(), RelaxedMetric(2, stat='ods')], monitor='relaxed_ods2')

class Roads(Photos):
    name, budget, epochs, keys = 'roads', '21 scenes at 2 m/pixel, 128² tiles, bs 8, 8 epochs', 8, ('breakeven', 'road_iou')
    def available(self): return (DATA/'mass_roads_more'/'train'/'sat').is_dir()
    def setup(self):
        from unet_fastai.data.prepare import prepare
        src = self.work/'roads_scenes'
        for k in ('sat', 'map'):
            (src/k).mkdir(parents=True, exist_ok=True)
            for d in ('mass_roads', 'mass_roads_more'):
                for f in sorted((DATA/d/'train'/k).glob('*.png')):
                    if not (src/k/f.name).exists(): (src/k/f.name).symlink_to(f)
        prepare(src, self.work/'roads', scale=0.5, tile=128, nodata=255, progress=False)
        return super().setup()
    def dls(self, valid):
        from unet_fastai.data.blocks import roads_dls
        return roads_dls(self.work/'roads', bs=8, valid_scenes=valid)
    def train_opts(self, dls): return {}

SPECS = (CamVid, Cityscapes, PennFudan, Pets, Dogs, BSDS500, Roads)

def loss_key(spec, cfg:dict):
    "What a configuration trains with on this data set: configurations with the same key are the same run"
    if spec.own_loss: return 'own loss'
    import inspect
    from unet_fastai.train.learner import seg_learner
    p = inspect.signature(seg_learner).parameters
    return (cfg.get('loss', p['loss'].default), cfg.get('class_weights', p['class_weights'].default),
            *sorted((k, str(v)) for k, v in cfg.items() if k not in ('loss', 'class_weights')))

def run_fold(spec, cfg, valid, seed, out, epochs, **train):
    "Train fold `valid` of `spec` with configuration `cfg` (and `train`: more options of `train_segmentation`); its figures"
    from unet_fastai.core import console_progress
    from unet_fastai.train.loop import train_segmentation, evaluate
    from unet_fastai.train.pictures import read_history
    dls = spec.dls(valid)
    opts = {**spec.train_opts(dls), **({} if spec.own_loss else cfg)}
    t = time.perf_counter()
    with console_progress(False), contextlib.redirect_stdout(io.StringIO()):
        learn = train_segmentation(dls, out=out, epochs=epochs, lr=2e-3, pretrained=False, train_seed=seed, **opts, **train)
    wall = time.perf_counter() - t
    ev, h = evaluate(learn), read_history(Path(out)/'history.csv')
    monitor = opts.get('monitor', 'mIoU')
    best = h.loc[h[monitor].idxmax()]
    r = dict(accuracy=ev['accuracy'], mIoU=ev['mIoU'], zero=sum(v == 0 for v in ev['iou'].values()), wall=wall,
             n_train=len(dls.train_ds), n_valid=len(dls.valid_ds), epochs=len(h))
    if 'dice' in h: r['dice'] = float(best['dice'])
    if 'relaxed_ods2' in h: r['ods'] = float(best['relaxed_ods2'])
    if 'relaxed_be3' in h: r['breakeven'], r['road_iou'] = float(best['relaxed_be3']), ev['iou'].get('road')
    r['worst'] = sorted(ev['iou'].items(), key=lambda kv: kv[1])[:3]
    return r

def data_sets(work, only=None, folds=3):
    "(spec, groups, folds) of each reference data set there is (those in `only`), set up in `work`; the others said skipped"
    work = Path(work); work.mkdir(parents=True, exist_ok=True)
    for cls in SPECS:
        spec = cls(work)
        if only and spec.name not in only: continue
        if not spec.available(): print(f"\n{spec.name}: skipped, its data are not in {DATA}", flush=True); continue
        groups = spec.setup()
        yield spec, groups, _folds(groups, folds)

def mean_sd(v): return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.)

FIELDS = ['dataset', 'config', 'figure', 'mean', 'sd', 'folds', 'values', 'budget']

def read_csv(path=CSV)->dict:
    "(data set, configuration, figure) → row of the committed table"
    if not Path(path).is_file(): return {}
    with open(path) as f: return {(r['dataset'], r['config'], r['figure']): r for r in csv.DictReader(f)}

def write_csv(rows:list, path=CSV):
    "Write `rows` over the table's rows of the same data sets (the others kept), under a temporary name"
    names = {r['dataset'] for r in rows}
    keep = [r for r in read_csv(path).values() if r['dataset'] not in names]
    tmp = Path(path).with_suffix('.csv.tmp')
    with open(tmp, 'w', newline='') as f:
        w = csv.DictWriter(f, FIELDS); w.writeheader(); w.writerows(keep + rows)
    os.replace(tmp, path)

def summarise(name:str, keys:tuple, budget:str, results:dict, before:dict)->list:
    "Print a data set's table (mean ± sd over the folds, change against the committed table) and the check of the default; its CSV rows"
    rows = []
    print(f"\n| {name} | " + ' | '.join(keys) + " | vs the committed table |\n|" + ' --- |' * (len(keys) + 2))
    for c, runs in results.items():
        if not runs: continue
        cells, change = [], []
        for k in keys:
            v = [r[k] for r in runs]
            m, s = mean_sd(v)
            cells.append(f"{m:.3f} ± {s:.3f}")
            rows.append(dict(dataset=name, config=c, figure=k, mean=f'{m:.4f}', sd=f'{s:.4f}', folds=len(runs),
                             values=' '.join(f'{x:.4f}' for x in v), budget=budget))
            if (name, c, k) in before: change.append(f"{k} {m - float(before[name, c, k]['mean']):+.3f}")
        print(f"| {c} | " + ' | '.join(cells) + f" | {', '.join(change) or 'not in it'} |")
    prev = [c for c in PREVIOUS if results.get(c)]
    if results.get('default') and prev:
        for k in keys:
            if k == 'zero': continue
            best = max(prev, key=lambda c: statistics.mean(r[k] for r in results[c]))
            mb, sb = mean_sd([r[k] for r in results[best]])
            d = [a[k] - b[k] for a, b in zip(results['default'], results[best])]
            md, sd = mean_sd(d)
            print(f"  {k}: default − the better previous ({best}, {mb:.3f} ± {sb:.3f}): {md:+.3f} (per fold {', '.join(f'{x:+.3f}' for x in d)}; "
                  f"sd of the differences {sd:.3f}): " + ('within its sd or better' if md >= -sb else 'WORSE by more than its sd'), flush=True)
    return rows

def main(only=None, configs=None, folds=3, seed=0, quick=False, save=False, work=None):
    warnings.filterwarnings('ignore')
    import matplotlib; matplotlib.use('Agg')
    import torch
    before, t0 = read_csv(), time.perf_counter()
    print(f"recipes: {folds}-fold cross-validation{' (quick: fold 0, half the epochs)' if quick else ''}, from scratch, lr 2e-3, "
          f"seeds {seed}+fold, {torch.get_num_threads()} threads; configurations: "
          + '; '.join(f"{c} {CONFIGS[c] or '(the package default)'}" for c in configs or CONFIGS), flush=True)
    with (nullcontext(work) if work else tempfile.TemporaryDirectory(prefix='bench_recipes_')) as work:
        for spec, groups, parts in data_sets(work, only, folds):
            epochs = max(1, spec.epochs // 2) if quick else spec.epochs
            print(f"\n## {spec.name}: {sum(groups.values())} items in {len(groups)} groups, {folds} folds of "
                  f"{[sum(groups[g] for g in p) for p in parts]} items; {spec.budget if not quick else f'{epochs} epochs (quick)'}", flush=True)
            results = {c: [] for c in configs or spec.configs}
            for f, valid in enumerate(parts[:1] if quick else parts):
                done = {}
                for c in results:
                    if spec.own_loss and c != 'default': continue
                    key = loss_key(spec, CONFIGS[c])
                    if key not in done:
                        with tempfile.TemporaryDirectory(dir=work) as out: done[key] = run_fold(spec, CONFIGS[c], valid, seed + f, out, epochs)
                        r = done[key]
                        print(f"  fold {f} [{c}] ({r['n_train']} train / {r['n_valid']} val, {r['wall']:.0f} s): "
                              + '  '.join(f"{k} {r[k]:.3f}" if k != 'zero' else f"classes at IoU 0: {r[k]}" for k in spec.keys)
                              + f"  (lowest IoU: {', '.join(f'{n} {v:.2f}' for n, v in r['worst'])})", flush=True)
                    else: print(f"  fold {f} [{c}]: the same run as above (same loss here)", flush=True)
                    results[c].append(done[key])
            rows = summarise(spec.name, spec.keys, spec.budget, results, {} if quick else before)  # a screen is no full run to compare
            if save and not quick: write_csv(rows); print(f"  written to {CSV}", flush=True)
    print(f"\nall: {(time.perf_counter() - t0) / 60:.1f} min")

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--only', type=lambda s: s.split(','), default=None, help='comma-separated data sets (default: all)')
    ap.add_argument('--configs', nargs='+', default=None, choices=list(CONFIGS),
                    help="default: default, de45657, ce")
    ap.add_argument('--folds', type=int, default=3); ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--quick', action='store_true', help='a screen: fold 0 only, half the epochs')
    ap.add_argument('--save', action='store_true', help=f'write the table to {CSV.name} (the regression guard)')
    ap.add_argument('--work', default=None, help='folder for prepared data and models (default: a temporary folder)')
    main(**vars(ap.parse_args()))
