"""Where the model is wrong, measured: calibration on every reference data set, the labels `suggest`'s ranking saves, the labels `audit` finds.

Parts (`--parts`, all by default; every model from scratch, `pretrained=False`, lr 2e-3, on this CPU):

- `calibration`: every data set of `bench/recipes.py` (its fold 0, half its epochs: the `--quick` budget). The
  validation fold's items are split alternately: the temperature is fitted on one half and the expected calibration
  error (15 bins, void out) measured on the other, for the model alone, one temperature and one temperature per class,
  each kept as training keeps it (only if it lowers the error where it was fitted); and the share of pixels whose
  class a per-class temperature changes.
- `roads`: simulated labelling on the 21 real Massachusetts scenes, as 128² tiles at 2 m/pixel (those at least half
  imagery): 2 scenes validate (the kept model, the temperature), 4 are held out for the test, the other 15 are the pool.
  From `--start` random tiles, `--rounds` − 1 rounds add `--k` tiles chosen at random or by `rank_windows` (what
  `unet_fastai suggest` runs: calibrated entropy, spread in what the model sees, not beside one chosen); every round
  trains anew for the same number of steps (`--steps`); the test's relaxed breakeven (ρ 3) and road IoU.
- `camvid`: the same with frames at 96×128: the drive 0001TP is the test, a third of 0016E5's second half validates, the rest
  (0006R0 and 0016E5's first half) is the pool; frames next to a chosen one (in time) wait. Test mIoU.
- `audit`: the pool tiles' road masks corrupted (`--corrupt`, 10 % of the road segments: half deleted, half shifted
  by 3-5 pixels = 6-10 m), a model trained on them, then `doubt_map` + `doubt_regions` on the pool: precision of the
  first k regions (a region is right when it overlaps a corrupted pixel), recall (corrupted segments any region
  meets), against the same regions in random order.

    python bench/active.py [--parts calibration,roads,camvid,audit] [--only pennfudan,...] [--seeds 0 1] [--rounds 5] [--k 24] [--steps 150]

Every figure is printed side by side (random | ranked, mean ± sd over the seeds), with the wall time of each part.
"""
import argparse, contextlib, io, math, random, statistics, sys, tempfile, time, warnings
from pathlib import Path
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from recipes import SPECS, DATA, _folds  # the reference data sets as cross-validation sees them

def quiet():
    "Training without its tables and bars"
    from unet_fastai.core import console_progress
    stack = contextlib.ExitStack()
    stack.enter_context(console_progress(False)); stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    return stack

def probabilities(learn, dl):
    "(probabilities (N, C, h, w) calibrated by the model's temperature, targets (N, h, w)) of every batch of `dl`"
    import torch
    from unet_fastai.train.metrics import class_probs
    from unet_fastai.train.calibration import calibrated
    from unet_fastai.spec import model_spec
    ps, ys = [], []
    learn.model.eval()
    with torch.no_grad():
        for xb, yb in dl: ps.append(class_probs(learn.model(xb)).float().cpu().numpy()); ys.append(yb.cpu().numpy())
    return calibrated(np.concatenate(ps), model_spec(learn).temperature, axis=1), np.concatenate(ys)

def mean_sd(v): return (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.) if v else (float('nan'), 0.)

# --- calibration -------------------------------------------------------------------------------------------------

def calibration_part(work, seed, only=None):
    import torch
    from unet_fastai.train.loop import train_segmentation
    from unet_fastai.train.calibration import CalibrationCounts, fit_temperature, calibrated
    from unet_fastai.train.metrics import class_probs
    print("\n## calibration: fitted on half the validation fold's items, measured on the other half (ECE, 15 bins)")
    print("| data set | pixels | temperature | ECE model | ECE one temperature | ECE per class | classes changed per class |\n|" + ' --- |' * 7)
    for cls in SPECS:
        spec = cls(work)
        if only and spec.name not in only: continue
        if not spec.available(): print(f"| {spec.name} | skipped: not in {DATA} |"); continue
        t = time.perf_counter()
        parts = _folds(spec.setup(), 3)
        dls = spec.dls(parts[0])
        with quiet(), tempfile.TemporaryDirectory(dir=work) as out:
            learn = train_segmentation(dls, out=out, epochs=max(1, spec.epochs // 2), lr=2e-3, pretrained=False, train_seed=seed,
                                       **spec.train_opts(dls))
        halves, k = [([], []), ([], [])], 0  # the validation items alternately: fitted on one half, measured on the other
        learn.model.eval()
        with torch.no_grad():
            for xb, yb in dls.valid:
                p = class_probs(learn.model(xb)).float().cpu()
                for pi, yi in zip(p, yb.cpu()):
                    lp, y = pi.clamp_min(1e-30).log().permute(1, 2, 0).reshape(-1, p.shape[1]), yi.reshape(-1).long()
                    if dls.void is not None: lp, y = lp[y != dls.void], y[y != dls.void]
                    halves[k % 2][0].append(lp); halves[k % 2][1].append(y); k += 1
        (fl, fy), (ml, my) = [(torch.cat(a), torch.cat(b)) for a, b in halves]
        ts, tc = fit_temperature(fl, fy), fit_temperature(fl, fy, per_class=True)
        fp = fl.exp().numpy().T
        kept = [t if CalibrationCounts().add(calibrated(fp, t), fy.numpy()).ece() < CalibrationCounts().add(fp, fy.numpy()).ece() else None
                for t in (ts, tc)]  # as training keeps it: only if it lowers the error where it was fitted
        p, y = ml.exp().numpy().T, my.numpy()
        ece = [CalibrationCounts().add(calibrated(p, t), y).ece() for t in (None, *kept)]
        changed = float((calibrated(p, tc).argmax(0) != p.argmax(0)).mean()) if kept[1] is not None else 0.
        print(f"| {spec.name} | {len(y)} | {ts:.2f}{'' if kept[0] else ' (not kept)'} | {ece[0]:.4f} | {ece[1]:.4f} | "
              f"{ece[2]:.4f}{'' if kept[1] else ' (not kept)'} | {changed:.2%} |  {time.perf_counter() - t:.0f} s", flush=True)

# --- simulated labelling ---------------------------------------------------------------------------------------------

class Pool:
    "Items (image, mask) with their group, place (for `rank_windows`) and the split: pool, validation, test"
    def dls(self, train:list, valid:list, size=None):
        from unet_fastai.data.blocks import segmentation_dls
        pairs = [self.pairs[i] for i in train + valid]
        return segmentation_dls(pairs, [False] * len(train) + [True] * len(valid), self.codes, void=self.void, mask_map=self.mask_map,
                                size=self.size, bs=8, aug=self.aug, cache_mb=0)

class RoadTiles(Pool):
    name, codes, void, aug, size, figures = 'roads', ['background', 'road'], 255, 'aerial', None, ('relaxed_be3', 'road IoU')
    mask_map = {0: 0, 1: 1, 255: 255}
    def available(self): return (DATA/'mass_roads_more'/'train'/'sat').is_dir()
    def setup(self, work):
        from PIL import Image
        from unet_fastai.io.geometry import parse_tile_name
        spec = [s for s in SPECS if s.name == 'roads'][0](work)
        spec.setup()
        tiles = work/'roads'/'tiles'
        pairs = [(i, tiles/'masks'/i.name) for i in sorted((tiles/'images').glob('*.png'))]
        pairs = [p for p in pairs if (np.asarray(Image.open(p[1])) != 255).mean() >= 0.5]  # at least half imagery
        scenes = sorted({parse_tile_name(i.name)[0] for i, _ in pairs})
        self.pairs = pairs
        self.places = np.array([[scenes.index(s), y // 128, x // 128] for s, y, x in (parse_tile_name(i.name) for i, _ in pairs)])
        rng = random.Random(0)
        order = scenes[:]; rng.shuffle(order)
        valid, test = set(order[:2]), set(order[2:6])
        self.split = ['valid' if scenes[p[0]] in valid else 'test' if scenes[p[0]] in test else 'pool' for p in self.places]
        return f"{len(pairs)} tiles of {len(scenes)} scenes: {self.split.count('pool')} in the pool, {self.split.count('valid')} validate, {self.split.count('test')} test"
    def score(self, r): return dict(relaxed_be3=r['relaxed_be3'], **{'road IoU': r['road_iou']})

class CamVidFrames(Pool):
    name, aug, size, figures, mask_map = 'camvid', 'street', (96, 128), ('mIoU',), 'identity'
    def available(self): return (DATA/'camvid'/'train').is_dir()
    def setup(self, work):
        from unet_fastai.data.blocks import camvid_pairs, read_codes
        self.pairs, _ = camvid_pairs(DATA/'camvid')
        self.pairs = sorted(self.pairs)
        self.codes, self.void = read_codes(DATA/'camvid')
        late = sorted(i.stem for i, _ in self.pairs if i.stem.startswith('0016E5'))
        half = set(late[len(late) // 2:])
        drive = lambda s: '0016E5b' if s in half else s.split('_')[0]
        drives = sorted({drive(i.stem) for i, _ in self.pairs})
        self.places = np.array([[drives.index(drive(i.stem)), k, 0] for k, (i, _) in enumerate(self.pairs)])  # neighbours in time
        self.split = ['test' if drive(i.stem) == '0001TP' else ('valid' if k % 3 == 0 else 'unused') if drive(i.stem) == '0016E5b' else 'pool'
                      for k, (i, _) in enumerate(self.pairs)]  # a third of 0016E5's second half validates: every epoch runs it
        return f"{len(self.pairs)} frames: {self.split.count('pool')} in the pool, {self.split.count('valid')} validate, {self.split.count('test')} test (0001TP)"
    def score(self, r): return dict(mIoU=r['mIoU'])

def train_round(pool, labelled, valid, steps, seed, work):
    "A model trained anew on `labelled` for about `steps` steps (whole epochs of at least 20 steps: small sets repeated); validated on `valid`"
    from unet_fastai.train.loop import train_segmentation
    items = labelled * max(1, math.ceil(160 / len(labelled)))  # an epoch validates and checkpoints: not after every 2 steps
    dls = pool.dls(items, valid)
    epochs = max(1, round(steps / (len(items) // 8)))
    with quiet(), tempfile.TemporaryDirectory(dir=work) as out:
        return train_segmentation(dls, out=out, epochs=epochs, lr=2e-3, pretrained=False, train_seed=seed)

def test_figures(pool, learn, test):
    "The model's figures on the test items: relaxed breakeven and road IoU, or mIoU"
    import torch
    from unet_fastai.train.metrics import confusion_matrix, cm_report, RelaxedCounts
    p, y = probabilities(learn, pool.dls(test[:1], test).valid)
    cm = confusion_matrix(torch.from_numpy(p.argmax(1)), torch.from_numpy(y), len(pool.codes), pool.void)
    r = cm_report(cm, pool.codes, pool.void)
    out = dict(mIoU=r['mIoU'], road_iou=r['iou'].get('road'))
    if len(pool.codes) == 2:
        rel = RelaxedCounts(3)
        for pi, yi in zip(p, y): rel.add(torch.from_numpy(pi[1]), torch.from_numpy(yi == 1), torch.from_numpy(yi != pool.void))
        out['relaxed_be3'] = rel.breakeven()
    return pool.score(out)

def ranked(pool, learn, unlabelled, k):
    "`k` of `unlabelled` as `unet_fastai suggest` chooses them: calibrated entropy, spread in what the model sees and in place"
    from unet_fastai.infer.uncertainty import entropy
    from unet_fastai.infer.suggest import rank_windows
    p, y = probabilities(learn, pool.dls(unlabelled[:1], unlabelled).valid)
    valid = y != pool.void if pool.void is not None else np.ones(y.shape, bool)  # roads: the imagery's no-data (a mask of the images)
    h = entropy(p, 1)
    score = np.array([hi[v].mean() if v.any() else 0. for hi, v in zip(h, valid)])
    shares = np.stack([(p.argmax(1) == c).mean((1, 2)) for c in range(p.shape[1])], 1)
    chosen = rank_windows(score, np.column_stack([score, shares]), k, pool.places[unlabelled])
    return [unlabelled[i] for i in chosen]

def labelling_part(pool, work, seeds, rounds, k, start, steps):
    t0 = time.perf_counter()
    if not pool.available(): return print(f"\n## {pool.name}: skipped, its data are not in {DATA}")
    print(f"\n## simulated labelling, {pool.name}: {pool.setup(work)}; start {start}, +{k} a round, {rounds} rounds, "
          f"about {steps} steps of 8 a round, seeds {seeds}", flush=True)
    items = {s: [i for i, x in enumerate(pool.split) if x == s] for s in ('pool', 'valid', 'test')}
    curves = {'random': [], 'ranked': []}  # per seed: [(labelled, figures)]
    for seed in seeds:
        rng = random.Random(seed)
        first = rng.sample(items['pool'], start)
        learn0 = train_round(pool, first, items['valid'], steps, seed, work)
        f0 = test_figures(pool, learn0, items['test'])
        for how in curves:
            labelled, learn, curve = list(first), learn0, [(start, f0)]
            for r in range(1, rounds):
                rest = [i for i in items['pool'] if i not in labelled]
                labelled += rng.sample(rest, k) if how == 'random' else ranked(pool, learn, rest, k)
                learn = train_round(pool, labelled, items['valid'], steps, seed, work)
                curve.append((len(labelled), test_figures(pool, learn, items['test'])))
            curves[how].append(curve)
            print(f"  seed {seed} {how}: " + '; '.join(f"{n}: " + ', '.join(f"{a} {v:.3f}" for a, v in f.items()) for n, f in curve), flush=True)
    for fig in pool.figures:
        print(f"\n| labelled | random {fig} | ranked {fig} |\n| --- | --- | --- |")
        for r in range(rounds):
            cells = [mean_sd([c[r][1][fig] for c in curves[how]]) for how in curves]
            print(f"| {curves['random'][0][r][0]} | " + ' | '.join(f"{m:.3f} ± {s:.3f}" for m, s in cells) + ' |')
        goal = statistics.mean(c[-1][1][fig] for c in curves['random'])
        ns = [curves['random'][0][r][0] for r in range(rounds)]
        mean_ranked = [statistics.mean(c[r][1][fig] for c in curves['ranked']) for r in range(rounds)]
        mean_random = [statistics.mean(c[r][1][fig] for c in curves['random']) for r in range(rounds)]
        diff = statistics.mean(a - b for a, b in zip(mean_ranked[1:], mean_random[1:])) if rounds > 1 else 0.
        print(f"  {fig}: ranked − random, mean over the rounds after the first: {diff:+.3f}")
        reach = next((r for r in range(rounds) if mean_ranked[r] >= goal), None)
        if goal < max(mean_random):
            print(f"  {fig}: random's quality does not rise with the labels at this budget (its best {max(mean_random):.3f} at "
                  f"{ns[mean_random.index(max(mean_random))]} labels, its final {goal:.3f}): no saving can be read from it")
        elif reach is None: print(f"  {fig}: the ranking does not reach random's final {goal:.3f} within {ns[-1]} labels")
        else: print(f"  {fig}: the ranking reaches random's final {goal:.3f} at {ns[reach]} labels: {ns[-1] - ns[reach]} of {ns[-1]} saved "
                    f"({(ns[-1] - ns[reach]) / ns[-1]:.0%}), at the granularity of a round")
    print(f"  {pool.name}: {(time.perf_counter() - t0) / 60:.1f} min", flush=True)

# --- audit ---------------------------------------------------------------------------------------------------------

def corrupt(mask, rng, share, void=255):
    "`mask` with `share` of its road segments corrupted (half deleted, half shifted 3-5 pixels); the corrupted pixels"
    from scipy import ndimage
    lab, n = ndimage.label(mask == 1, structure=np.ones((3, 3)))
    out = mask.copy()
    for s in range(1, n + 1):
        if rng.random() >= share: continue
        seg = lab == s
        out[seg] = 0
        if rng.random() < 0.5:
            dy, dx = (rng.choice([-1, 1]) * rng.randint(3, 5) for _ in range(2))
            moved = np.roll(seg, (dy, dx), (0, 1)) & (mask != void)
            out[moved] = 1
    return out, out != mask

def audit_part(work, seed, share, steps, ks=(10, 25, 50)):
    from PIL import Image
    from unet_fastai.infer.audit import doubt_map, doubt_regions
    t0 = time.perf_counter()
    pool = RoadTiles()
    if not pool.available(): return print(f"\n## audit: skipped, the roads are not in {DATA}")
    pool.setup(work)
    rng = random.Random(seed)
    items = [i for i, s in enumerate(pool.split) if s == 'pool']
    bad = work/'corrupted'; bad.mkdir(exist_ok=True)
    truth_bad = {}
    for i in items:
        img, m = pool.pairs[i]
        mb, diff = corrupt(np.asarray(Image.open(m)), rng, share)
        Image.fromarray(mb).save(bad/m.name); truth_bad[i] = diff
        pool.pairs[i] = (img, bad/m.name)
    print(f"\n## audit: {share:.0%} of the road segments of {len(items)} pool tiles corrupted ({sum(d.sum() for d in truth_bad.values())} pixels); "
          f"a model trained on them for about {steps} steps", flush=True)
    learn = train_round(pool, items, [i for i, s in enumerate(pool.split) if s == 'valid'], steps, seed, work)
    p, y = probabilities(learn, pool.dls(items[:1], items).valid)
    regions = []
    for j, i in enumerate(items):
        kind, conf = doubt_map(p[j], p[j].argmax(0).astype(np.uint8), y[j], 0.9, pool.void)
        regions += [dict(r, item=i, hit=bool(truth_bad[i][r['row']:r['row'] + r['height'], r['col']:r['col'] + r['width']].any()))
                    for r in doubt_regions(kind, conf, min_pixels=8)]
    regions.sort(key=lambda r: -r['score'])
    base = statistics.mean(r['hit'] for r in regions) if regions else float('nan')
    print("| first k regions | audit precision | random order (expected) |\n| --- | --- | --- |")
    for k in ks: print(f"| {k} | {statistics.mean(r['hit'] for r in regions[:k]) if regions else float('nan'):.3f} | {base:.3f} |")
    from scipy import ndimage
    segs = found = 0
    for i in items:
        lab, n = ndimage.label(truth_bad[i], structure=np.ones((3, 3)))
        met = np.zeros(lab.shape, bool)
        for r in (r for r in regions if r['item'] == i): met[r['row']:r['row'] + r['height'], r['col']:r['col'] + r['width']] = True
        segs += n; found += len(set(np.unique(lab[met & (lab > 0)])))
    print(f"  {len(regions)} regions in doubt; corrupted segments met by a region: {found} of {segs} ({found / max(1, segs):.0%}); "
          f"{(time.perf_counter() - t0) / 60:.1f} min", flush=True)

def main(parts, seeds, rounds, k, start, steps, corrupt_share, only=None, work=None):
    warnings.filterwarnings('ignore')
    import matplotlib; matplotlib.use('Agg')
    import torch
    print(f"active: {', '.join(parts)}; {torch.get_num_threads()} threads; from scratch, lr 2e-3", flush=True)
    t0 = time.perf_counter()
    with (contextlib.nullcontext(work) if work else tempfile.TemporaryDirectory(prefix='bench_active_')) as work:
        work = Path(work); work.mkdir(parents=True, exist_ok=True)
        if 'calibration' in parts: calibration_part(work, seeds[0], only)
        if 'roads' in parts: labelling_part(RoadTiles(), work, seeds, rounds, k, start, steps)
        if 'camvid' in parts: labelling_part(CamVidFrames(), work, seeds, rounds, k, start, steps)
        if 'audit' in parts: audit_part(work, seeds[0], corrupt_share, 3 * steps)
    print(f"\nall: {(time.perf_counter() - t0) / 60:.1f} min")

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--parts', type=lambda s: s.split(','), default=['calibration', 'roads', 'camvid', 'audit'])
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1])
    ap.add_argument('--rounds', type=int, default=5); ap.add_argument('--k', type=int, default=24)
    ap.add_argument('--start', type=int, default=24); ap.add_argument('--steps', type=int, default=150)
    ap.add_argument('--corrupt', dest='corrupt_share', type=float, default=0.1)
    ap.add_argument('--only', type=lambda s: s.split(','), default=None, help='calibration: these data sets of bench/recipes.py (default: all)')
    ap.add_argument('--work', default=None, help='folder for prepared data and models (default: a temporary folder)')
    main(**vars(ap.parse_args()))
