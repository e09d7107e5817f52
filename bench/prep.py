"""Prepare-stage benchmark: `unet_fastai.prepare.prepare` against a naive single-process Pillow loop.

Both get the same generated 1500x1500 TIFF scenes (RGB + 0/255 mask) and make the same outputs: PNG of the scene,
512x512 resize (LANCZOS image, NEAREST mask), 16 tiles of 128x128, masks mapped 0/255 -> 0/1. Runs alternate
(naive, prepare, naive, prepare, ...); the script prints ms/scene for each (median over rounds), their ratio, and
checks that both wrote the same pixels.  Target: ratio >= 1.8 on 2 cores.

    python bench/prep.py [--scenes 8] [--rounds 3] [--workers N]
"""
import argparse, shutil, statistics, tempfile, time
from pathlib import Path
import numpy as np
from PIL import Image
from unet_fastai.prepare import prepare
from unet_fastai.synthetic import write_scenes

def naive(src, dst, size=512, tile=128):
    "The reference notebooks' loop: one scene at a time, Pillow throughout"
    for kind, sub in (('images', 'sat'), ('masks', 'map')):
        for d in ('png', 'resized', 'tiles'): (dst/d/kind).mkdir(parents=True, exist_ok=True)
    for ip in sorted((src/'sat').glob('*.tif')):
        for kind, p in (('images', ip), ('masks', src/'map'/ip.name)):
            im = Image.open(p)
            if kind == 'masks': im = im.point(lambda v: 1 if v == 255 else 0)
            im.save(dst/'png'/kind/f'{ip.stem}.png')
            im = im.resize((size, size), Image.Resampling.NEAREST if kind == 'masks' else Image.Resampling.LANCZOS)
            im.save(dst/'resized'/kind/f'{ip.stem}.png')
            for y in range(0, size, tile):
                for x in range(0, size, tile):
                    im.crop((x, y, x + tile, y + tile)).save(dst/'tiles'/kind/f'{ip.stem}_y{y:05d}_x{x:05d}.png')

def same_pixels(a, b):
    fa, fb = sorted(p.relative_to(a) for p in a.rglob('*.png')), sorted(p.relative_to(b) for p in b.rglob('*.png'))
    return fa == fb and all((np.asarray(Image.open(a/f)) == np.asarray(Image.open(b/f))).all() for f in fa), len(fa)

def main(scenes=8, rounds=3, workers=None):
    root = Path(tempfile.mkdtemp(prefix='bench_prep_'))
    try:
        src = root/'src'
        write_scenes(src, n=scenes, size=1500)
        times = {'naive': [], 'prepare': []}
        for r in range(rounds):
            for name in times:
                out = root/f'{name}{r}'
                t = time.perf_counter()
                if name == 'naive': naive(src, out)
                else: prepare(src, out, size=512, tile=128, workers=workers, progress=False)
                times[name].append((time.perf_counter() - t) / scenes * 1000)
        ok, n = same_pixels(root/'naive0', root/'prepare0')
        nv, pr = statistics.median(times['naive']), statistics.median(times['prepare'])
        print(f"scenes: {scenes} x 1500x1500 RGB TIFF + mask, {rounds} rounds alternating, {n} PNG files each")
        print(f"naive loop (1 process, Pillow): {nv:8.1f} ms/scene   runs: {[round(t) for t in times['naive']]}")
        print(f"unet_fastai prepare           : {pr:8.1f} ms/scene   runs: {[round(t) for t in times['prepare']]}")
        print(f"speed-up prepare / naive      : {nv / pr:8.2f}x   (target >= 1.8x on 2 cores)")
        print(f"same pixels in every output   : {ok}")
        if not ok: raise SystemExit('outputs differ')
    finally: shutil.rmtree(root, ignore_errors=True)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--scenes', type=int, default=8); ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--workers', type=int, default=None)
    main(**vars(ap.parse_args()))
