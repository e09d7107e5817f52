"""CamVid from scratch on this CPU: train on ../shared/data/camvid train (367), validate on val (101).

Prints the configuration, wall time, training img/s, and on the validation set the pixel accuracy without void,
mIoU and IoU per class (void excluded). These are from-scratch CPU runs (no ImageNet weights); the reference's
93 % accuracy is with a pretrained ResNet34 at full size on a GPU.

    python bench/camvid.py [--size 96 128] [--bs 8] [--epochs 5] [--freeze-epochs 1] [--lr 2e-3] [--pretrained] [--decoder lean]
                           [--loss ce|ce+dice] [--class-weights median] [--seed 0]
"""
import argparse, json, tempfile, time, warnings
from contextlib import nullcontext
from pathlib import Path
from unet_fastai.train import train_camvid, evaluate, read_history

def main(size=(96, 128), bs=8, epochs=5, freeze_epochs=1, lr=2e-3, pretrained=False, data='../shared/data/camvid', out=None,
         decoder='lean', loss='ce', class_weights=None, seed=0):
    warnings.filterwarnings('ignore')
    with (nullcontext(out) if out else tempfile.TemporaryDirectory(prefix='bench_camvid_')) as out:  # --out keeps the files
        out = Path(out)
        t = time.perf_counter()
        learn = train_camvid(data, size=tuple(size), bs=bs, epochs=epochs, freeze_epochs=freeze_epochs, lr=lr or None,
                             pretrained=pretrained, out=out, decoder=decoder, loss=loss, class_weights=class_weights,
                             train_seed=seed)
        wall = time.perf_counter() - t
        ev = evaluate(learn)
        n_train = len(learn.dls.train_ds)
        print(f"CamVid {n_train} train / {len(learn.dls.valid_ds)} val, size {size[0]}x{size[1]}, bs {bs}, "
              f"{freeze_epochs} frozen + {epochs} unfrozen epochs, lr {learn.lr_used:.2g}, pretrained={pretrained}, decoder={decoder}, "
              f"loss={loss}, class_weights={class_weights}, seed={seed}")
        print(f"wall time {wall:.0f} s, {n_train * (epochs + freeze_epochs) / wall:.2f} train img/s (validation included)")
        print(f"val accuracy without void {ev['accuracy']:.4f}   mIoU {ev['mIoU']:.4f}   (best epoch kept by mIoU)   "
              f"classes at IoU 0: {sum(v == 0 for v in ev['iou'].values())}")
        print('IoU per class: ' + ', '.join(f"{k} {v:.3f}" for k, v in ev['iou'].items()))
        print(read_history(out/'history.csv').round(4).to_string(index=False))
        (out/'bench.json').write_text(json.dumps(dict(wall_s=wall, **ev), indent=1))

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--size', type=int, nargs=2, default=[96, 128]); ap.add_argument('--bs', type=int, default=8)
    ap.add_argument('--epochs', type=int, default=5); ap.add_argument('--freeze-epochs', type=int, default=1)
    ap.add_argument('--lr', type=float, default=2e-3, help='0 runs lr_find'); ap.add_argument('--pretrained', action='store_true')
    ap.add_argument('--data', default='../shared/data/camvid'); ap.add_argument('--out', default=None)
    ap.add_argument('--decoder', default='lean', help="'lean' (default) or 'dynamic' (fastai's DynamicUnet)")
    ap.add_argument('--loss', default='ce', help="'ce' (default) or 'ce+dice'")
    ap.add_argument('--class-weights', default=None, help="None (default) or 'median' (SegNet's median-frequency balancing)")
    ap.add_argument('--seed', type=int, default=0, help='seed of the weights, augmentation and batch order')
    main(**vars(ap.parse_args()))
