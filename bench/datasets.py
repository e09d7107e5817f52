"""The reference systems' data sets, each trained from scratch for a stated CPU budget, with its metric.

    python bench/datasets.py [--only pennfudan,pets,dogs,cityscapes,bsds500] [--out DIR (kept; default: a temp folder)]

Budgets (2 CPU cores, no ImageNet weights offline, so `pretrained=False`; the published figures use ImageNet encoders and
the full data sets, so they are not comparable): each run takes 1-5 minutes here; the elapsed time is printed.
Data: ../shared/data (Penn-Fudan 43 photos, Oxford-IIIT Pet 42 of which 14 dogs, BSDS500 10 photos, Cityscapes pairs
300 train / 100 val). Validation: 20 % of the photos (by name, seed 0); Cityscapes: its val/ (other cities), with the
IoU of each of the 19 classes.
"""
import argparse, tempfile, time, warnings
from contextlib import nullcontext
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent/'shared'/'data'

def run(name, out):
    from fastai.torch_core import set_seed
    from unet_fastai.train.pictures import read_history
    set_seed(0)
    kw = dict(pretrained=False, freeze_epochs=0, out=out/name)
    t = time.perf_counter()
    if name == 'pennfudan':
        from unet_fastai.datasets.pennfudan import train_pennfudan
        train_pennfudan(DATA/'pennfudan', size=(160, 128), bs=4, epochs=20, lr=2e-3, **kw); key, ref = 'mIoU', 'reference: mIoU/accuracy curves only'
    elif name == 'pets':
        from unet_fastai.datasets.pets import train_pets
        train_pets(DATA/'oxford_pets', border='ignore', size=128, bs=4, epochs=20, lr=2e-3, **kw); key, ref = 'mIoU', ''
    elif name == 'dogs':
        from unet_fastai.datasets.pets import train_dogs
        train_dogs(DATA/'oxford_pets', size=150, bs=4, epochs=25, lr=2e-3, **kw); key, ref = 'dice', 'reference Dice 0.858 (2 epochs, all dogs, pretrained)'
    elif name == 'cityscapes':
        from unet_fastai.datasets.cityscapes import train_cityscapes
        learn = train_cityscapes(DATA/'cityscapes_pairs', size=(128, 128), bs=8, epochs=8, lr=2e-3, **kw); key, ref = 'mIoU', ''
        from unet_fastai.train.loop import evaluate
        iou = evaluate(learn)['iou']
        print('cityscapes IoU per class: ' + ', '.join(f'{k} {v:.2f}' for k, v in iou.items()), flush=True)
    elif name == 'bsds500':
        from unet_fastai.datasets.bsds500 import prepare_bsds500, train_bsds500
        prepare_bsds500(DATA/'bsds500', out/'bsds_prep', progress=False)
        train_bsds500(out/'bsds_prep', size=160, bs=4, epochs=30, lr=2e-3, **kw); key, ref = 'relaxed_ods2', 'ODS, relaxed rho=2 at half size'
    dt = time.perf_counter() - t
    h = read_history(out/name/'history.csv')
    best = h[key].max()
    print(f"{name:11s} {key} best {best:.3f} (last {h[key].iloc[-1]:.3f}) after {len(h)} epochs, {dt:5.0f} s"
          + (f"  [{ref}]" if ref else ''), flush=True)
    return best

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--only', default='pennfudan,pets,dogs,cityscapes,bsds500')
    ap.add_argument('--out', default=None)
    a = ap.parse_args()
    warnings.filterwarnings('ignore')
    import matplotlib; matplotlib.use('Agg')
    with (nullcontext(a.out) if a.out else tempfile.TemporaryDirectory(prefix='bench_datasets_')) as out:
        for n in a.only.split(','): run(n, Path(out))
