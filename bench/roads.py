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

    python bench/roads.py [--scale 0.5] [--tile 128] [--epochs 36] [--bs 8] [--lr 2e-3] [--loss ce+dice]
                          [--class-weights median|None] [--seed 0] [--split-seed 0] [--out DIR]
"""
import argparse, contextlib, io, tempfile, time, warnings
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

def main(scale=0.5, tile=128, epochs=36, bs=8, lr=2e-3, loss='ce+dice', class_weights='sqrt-median', seed=0, split_seed=0, out=None):
    warnings.filterwarnings('ignore')
    import matplotlib; matplotlib.use('Agg')
    from unet_fastai.core import console_progress
    from unet_fastai.preparation import prepare
    from unet_fastai.train import train_roads, evaluate, read_history
    from unet_fastai.data import scene_of
    from unet_fastai.evaluate import evaluate_scenes
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

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--scale', type=float, default=0.5); ap.add_argument('--tile', type=int, default=128)
    ap.add_argument('--epochs', type=int, default=36, help='36: the 20-minute budget here'); ap.add_argument('--bs', type=int, default=8)
    ap.add_argument('--lr', type=float, default=2e-3); ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--loss', default='ce+dice', help="'ce+dice' (the package default) or 'ce'")
    ap.add_argument('--class-weights', default='sqrt-median', type=lambda s: None if s == 'None' else s, help="'sqrt-median' (the package default), 'median' or None")
    ap.add_argument('--split-seed', type=int, default=0); ap.add_argument('--out', default=None)
    main(**vars(ap.parse_args()))
