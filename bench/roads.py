"""Roads from real scenes: the 21 Massachusetts Roads scenes, trained from scratch for a stated CPU budget.

Data: ../shared/data/mass_roads (2 scenes) + mass_roads_more (19; 63-87 % white no-data each), 1500x1500 at 1 m/pixel.
Prepared with `--nodata 255` (white is void: not learnt, not scored), rescaled by --scale, cut into --tile tiles;
split by scene (20 % of the scenes, seed --split-seed, for validation). Trained with `train_roads`' defaults
(cross-entropy with the square root of the median-frequency weights + Dice, everything at lr from scratch; --loss and
--class-weights change the loss) for --epochs (36: the 20-minute budget here). Prints the wall
time of preparing and training, the validation relaxed precision/recall breakeven (rho = 3 pixels of the prepared
scale, best epoch), road IoU and Dice at p >= 0.5 (argmax), and the breakeven of every epoch; then the same model on
the validation scenes whole, at their full 1 m/pixel (`evaluate_scenes`: predicted at the training scale, scored at
full size, white no-data left out): relaxed breakeven at rho = 3 pixels = 3 m, as Mnih (2013) scores (U-Net 0.9053).

With --windows, the same scenes are trained twice, each run in a fresh process, on the same budget (epochs, batch,
steps: as many random windows an epoch as the tiles path has training tiles, the same validation scenes, scored on the
same fixed grid of 128-pixel windows at the training scale): once from tiles (prepare, then `train_roads`) and once
straight from the scenes (`train_scenes`: random windows of the imagery each epoch, no tile on disk). It prints wall
time, bytes written to disk, peak RSS, the validation breakeven and the whole-scene figures of both, and the window
loader's windows/s (one epoch of batches, no model) against the model's training images/s (steps on one batch).
--tta 1 4 8 scores the validation scenes whole again with each test-time augmentation (relaxed breakeven, road IoU,
time against the first), for the model of each run.

    python bench/roads.py [--scale 0.5] [--tile 128] [--epochs 36] [--bs 8] [--lr 2e-3] [--loss ce+dice]
                          [--class-weights median|None] [--seed 0] [--split-seed 0] [--out DIR] [--windows] [--tta 1 4 8]
"""
import argparse, contextlib, io, json, os, resource, subprocess, sys, tempfile, time, warnings
from contextlib import nullcontext
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent/'shared'/'data'

def link_scenes(dst:Path)->Path:
    "One folder of sat/ + map/ links to the scenes of mass_roads and mass_roads_more"
    for k in ('sat', 'map'):
        (dst/k).mkdir(parents=True, exist_ok=True)
        for d in ('mass_roads', 'mass_roads_more'):
            for f in sorted((DATA/d/'train'/k).glob('*.png')): (dst/k/f.name).symlink_to(f)
    return dst

def disk_bytes(folder:Path)->int:
    "Bytes of the files under `folder` (links not followed)"
    return sum(p.stat().st_size for p in Path(folder).rglob('*') if p.is_file() and not p.is_symlink())

def rates(learn, bs)->dict:
    "Window loader alone (windows/s over one epoch of batches) and model alone (training images/s, steps on one batch)"
    import torch
    dl = learn.dls.train
    t = time.perf_counter(); n = sum(len(xb) for xb, _ in dl); loader = n / (time.perf_counter() - t)
    xb, yb = dl.one_batch()
    learn.model.train(); opt = torch.optim.AdamW(learn.model.parameters(), 1e-4)
    for i in range(6):
        if i == 1: t = time.perf_counter()
        opt.zero_grad(); learn.loss_func(learn.model(xb), yb).backward(); opt.step()
    return dict(loader_windows_s=loader, model_img_s=5 * bs / (time.perf_counter() - t))

def one_run(mode, scale, tile, epochs, bs, lr, loss, class_weights, seed, split_seed, out, windows_per_epoch=None, tta=())->dict:
    "Train the 21 scenes from tiles or from windows (this process alone); its figures"
    import matplotlib; matplotlib.use('Agg')
    from unet_fastai.core import console_progress
    from unet_fastai.data.prepare import prepare
    from unet_fastai.train.loop import train_roads, train_scenes, evaluate
    from unet_fastai.train.pictures import read_history
    from unet_fastai.data.blocks import scene_of
    from unet_fastai.infer.evaluate import evaluate_scenes
    from unet_fastai.data.windows import Window
    out = Path(out)
    t0 = time.perf_counter()
    kw = dict(bs=bs, epochs=epochs, lr=lr, pretrained=False, train_seed=seed, seed=split_seed, loss=loss, class_weights=class_weights,
              out=out/'model')
    with console_progress(False), contextlib.redirect_stdout(io.StringIO()):
        if mode == 'tiles':
            prepare(link_scenes(out/'scenes'), out/'prep', scale=scale, tile=tile, nodata=255, progress=False)
            t1 = time.perf_counter()
            learn = train_roads(out/'prep', **kw)
        else:
            t1 = time.perf_counter()
            learn = train_scenes(link_scenes(out/'scenes'), codes=('background', 'road'), size=tile, scale=scale, nodata=255,
                                 windows_per_epoch=windows_per_epoch, **kw)
    t2 = time.perf_counter()
    dls, h = learn.dls, read_history(out/'model'/'history.csv')
    items = dls.valid_ds.items
    val = sorted({scene_of(p) for p in items}) if mode == 'tiles' else sorted({Path(dls.windows.scenes.scenes[w.scene]).stem for w in items})
    pairs = [(out/'scenes'/'sat'/f'{s}.png', out/'scenes'/'map'/f'{s}.png') for s in val]
    with console_progress(False): r = evaluate_scenes(learn, pairs, rho=3, nodata=255)
    ev = evaluate(learn)
    res = dict(mode=mode, train_items=len(dls.train_ds), valid_items=len(items), valid_scenes=val, prepare_s=t1 - t0, train_s=t2 - t1,
               disk_bytes=disk_bytes(out) - disk_bytes(out/'model'), peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               breakeven_best=float(h['relaxed_be3'].max()), breakeven_last=float(h['relaxed_be3'].iloc[-1]),
               breakeven_by_epoch=[round(float(v), 3) for v in h['relaxed_be3']], road_iou=ev['iou']['road'],
               scenes_breakeven=r['relaxed_breakeven'], scenes_road_iou=r['iou']['road'])
    for n in tta:  # test-time augmentation on the validation scenes whole
        t = time.perf_counter()
        with console_progress(False): r = evaluate_scenes(learn, pairs, rho=3, nodata=255, tta=n)
        res[f'tta{n}'] = dict(breakeven=r['relaxed_breakeven'], road_iou=r['iou']['road'], s=time.perf_counter() - t)
    if mode == 'windows': res.update(rates(learn, bs))
    return res

def compare(out, **kw):
    "The tiles path, then the windows path with as many windows an epoch as the tiles path had training tiles, each in a fresh process"
    res = {}
    for mode in ('tiles', 'windows'):
        args = [sys.executable, __file__, '--run', mode, '--out', str(Path(out)/mode)] + [
            f"--{k.replace('_', '-')}={v}" for k, v in kw.items() if k != 'tta'] + ['--tta', *map(str, kw.get('tta') or [])] + ([f"--windows-per-epoch={res['tiles']['train_items']}"] if mode == 'windows' else [])
        r = subprocess.run(args, capture_output=True, text=True)
        if r.returncode: sys.exit(f"{mode} run failed:\n{r.stderr[-3000:]}")
        res[mode] = json.loads(r.stdout.strip().splitlines()[-1])
    t, w = res['tiles'], res['windows']
    print(f"21 real scenes, scale {kw['scale']}, {kw['tile']}-pixel tiles / windows, {kw['epochs']} epochs, bs {kw['bs']}, "
          f"{t['train_items']} training items an epoch; validation scenes {t['valid_scenes']} (windows: {w['valid_scenes']})")
    rows = [('prepare s', 'prepare_s', '.0f'), ('train s', 'train_s', '.0f'), ('disk written MB', 'disk_bytes', '.1f'),
            ('peak RSS MB', 'peak_rss_mb', '.0f'), ('val items', 'valid_items', 'd'), ('val breakeven best', 'breakeven_best', '.3f'),
            ('val breakeven last', 'breakeven_last', '.3f'), ('val road IoU (best epoch)', 'road_iou', '.3f'),
            ('val scenes whole: breakeven', 'scenes_breakeven', '.3f'), ('val scenes whole: road IoU', 'scenes_road_iou', '.3f')]
    print(f"{'':30} {'tiles':>10} {'windows':>10}")
    for name, k, f in rows:
        sc = (lambda v: v / 1e6) if k == 'disk_bytes' else (lambda v: v)
        print(f"{name:30} {format(sc(t[k]), f):>10} {format(sc(w[k]), f):>10}")
    print(f"breakeven by epoch, tiles:   {' '.join(f'{v:.2f}' for v in t['breakeven_by_epoch'])}")
    print(f"breakeven by epoch, windows: {' '.join(f'{v:.2f}' for v in w['breakeven_by_epoch'])}")
    for n in kw.get('tta') or []:
        a, b, first = t[f'tta{n}'], w[f'tta{n}'], t['tta%d' % kw['tta'][0]]
        print(f"TTA {n} on the val scenes whole: breakeven {a['breakeven']:.4f} / {b['breakeven']:.4f}, road IoU "
              f"{a['road_iou']:.4f} / {b['road_iou']:.4f} (tiles / windows model), {a['s'] / first['s']:.1f}x the time of TTA {kw['tta'][0]}")
    print(f"window loader {w['loader_windows_s']:.0f} windows/s (one process) vs model {w['model_img_s']:.1f} training img/s: the "
          f"loader is {w['loader_windows_s'] / w['model_img_s']:.0f}x faster than the model needs")

def main(scale=0.5, tile=128, epochs=36, bs=8, lr=2e-3, loss='ce+dice', class_weights='sqrt-median', seed=0, split_seed=0, out=None, tta=()):
    warnings.filterwarnings('ignore')
    import matplotlib; matplotlib.use('Agg')
    from unet_fastai.core import console_progress
    from unet_fastai.data.prepare import prepare
    from unet_fastai.train.loop import train_roads, evaluate
    from unet_fastai.train.pictures import read_history
    from unet_fastai.data.blocks import scene_of
    from unet_fastai.infer.evaluate import evaluate_scenes
    with (nullcontext(out) if out else tempfile.TemporaryDirectory(prefix='bench_roads_')) as out:
        out = Path(out)
        t0 = time.perf_counter()
        prepare(link_scenes(out/'scenes'), out/'prep', scale=scale, tile=tile, nodata=255, progress=False)
        t1 = time.perf_counter()
        with console_progress(False), contextlib.redirect_stdout(io.StringIO()):
            learn = train_roads(out/'prep', bs=bs, epochs=epochs, lr=lr, pretrained=False, train_seed=seed, seed=split_seed,
                                loss=loss, class_weights=class_weights, out=out/'model')
        t2 = time.perf_counter()
        ev, h = evaluate(learn), read_history(out/'model'/'history.csv')
        dls = learn.dls
        print(f"21 real scenes, scale {scale} ({1 / scale:g} m/pixel), tiles {tile}: {len(dls.train_ds)} train / {len(dls.valid_ds)} "
              f"val tiles; val scenes {sorted({scene_of(p) for p in dls.valid_ds.items})}")
        print(f"{epochs} epochs, bs {bs}, lr {lr}, loss {loss}, class weights {class_weights}, seed {seed}: prepare {t1 - t0:.0f} s, train {t2 - t1:.0f} s, "
              f"total {(t2 - t0) / 60:.1f} min")
        be = h['relaxed_be3']
        print(f"val relaxed breakeven (rho 3) best {be.max():.3f} at epoch {int(be.idxmax()) + 1}, last {be.iloc[-1]:.3f}; "
              f"road IoU {ev['iou']['road']:.3f}, road Dice {ev['dice']['road']:.3f}, accuracy {ev['accuracy']:.3f} (best epoch)")
        print('breakeven by epoch: ' + ' '.join(f'{v:.2f}' for v in be))
        val = sorted({scene_of(p) for p in dls.valid_ds.items})
        pairs = [(out/'scenes'/'sat'/f'{s}.png', out/'scenes'/'map'/f'{s}.png') for s in val]
        with console_progress(False): r = evaluate_scenes(learn, pairs, rho=3, nodata=255)
        print(f"val scenes whole at 1 m/pixel: relaxed breakeven (rho 3 m) {r['relaxed_breakeven']:.3f}, road IoU "
              f"{r['iou']['road']:.3f}, relaxed precision / recall at p >= 0.5 {r['relaxed_precision_at_0_5']:.3f} / "
              f"{r['relaxed_recall_at_0_5']:.3f}")
        base = None
        for n in tta:  # test-time augmentation on the validation scenes whole
            t = time.perf_counter()
            with console_progress(False): r = evaluate_scenes(learn, pairs, rho=3, nodata=255, tta=n)
            dt = time.perf_counter() - t
            base = base or dt
            print(f"  TTA {n}: relaxed breakeven {r['relaxed_breakeven']:.4f}, road IoU {r['iou']['road']:.4f}, {dt:.1f} s "
                  f"({dt / base:.1f}x the first)")

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--scale', type=float, default=0.5); ap.add_argument('--tile', type=int, default=128)
    ap.add_argument('--epochs', type=int, default=36, help='36: the 20-minute budget here'); ap.add_argument('--bs', type=int, default=8)
    ap.add_argument('--lr', type=float, default=2e-3); ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--loss', default='ce+dice', help="'ce+dice' (the package default) or 'ce'")
    ap.add_argument('--class-weights', default='sqrt-median', type=lambda s: None if s == 'None' else s, help="'sqrt-median' (the package default), 'median' or None")
    ap.add_argument('--split-seed', type=int, default=0); ap.add_argument('--out', default=None)
    ap.add_argument('--windows', action='store_true', help='compare training from windows of the scenes with the tiles path')
    ap.add_argument('--tta', type=int, nargs='*', default=[], help='also score the validation scenes whole with these test-time augmentations, e.g. 1 4 8')
    ap.add_argument('--run', choices=('tiles', 'windows'), help=argparse.SUPPRESS)  # one run of --windows, in its own process
    ap.add_argument('--windows-per-epoch', type=int, help=argparse.SUPPRESS)
    a = vars(ap.parse_args())
    run, wpe, windows = a.pop('run'), a.pop('windows_per_epoch'), a.pop('windows')
    warnings.filterwarnings('ignore')
    if run: print(json.dumps(one_run(run, **a, windows_per_epoch=wpe)))
    elif windows:
        out = a.pop('out')
        with (contextlib.nullcontext(out) if out else tempfile.TemporaryDirectory(prefix='bench_roads_')) as out: compare(out, **a)
    else: main(**a)
