"""Prepare-stage benchmark: `unet_fastai.data.prepare.prepare` against a naive single-process Pillow loop.

Both get the same generated 1500x1500 TIFF scenes (RGB + 0/255 mask) and make the same outputs: PNG of the scene,
512x512 resize (LANCZOS image, NEAREST mask), 16 tiles of 128x128, masks mapped 0/255 -> 0/1. Runs alternate
(naive, prepare, naive, prepare, ...); the script prints ms/scene for each (median over rounds), their ratio, and
checks that both wrote the same pixels (masks exactly; images to +-1, the rounding of a LANCZOS resize done strip by
strip).  Target: ratio >= 1.8 on 2 cores.

Then, for memory: `unet_fastai_prepare` of one large generated RGB scene + mask (default 20000x20000, the
default --size 512 and tiles of 128) in a process of its own, against the same command on a 600x600 scene (the
process with its imports): time and peak RSS (VmHWM) of each. Target: the peak does not grow with the scene's rows
(for a GeoTIFF it is the process + GDAL's 256 MB block cache + strips of rows, about 8 KB per scene column).

`--format png` makes every scene a PNG (converted from the generated TIFFs by libvips, by strips): PNG scenes are read
through libvips, which decodes a scene of over 100 MB to a temporary file rather than to memory, so they too are
prepared in bounded memory and a scene over Pillow's decompression-bomb limit (178 Mpx) is prepared like any other.
To compare with another version of the package, run this script with PYTHONPATH set to that version's tree (the
naive loop is the same code in both runs, so the ratios compare).

    python bench/prep.py [--scenes 8] [--rounds 3] [--workers N] [--big 20000] [--format tif|png]
"""
import argparse, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np
from PIL import Image
from unet_fastai.data.prepare import prepare
from unet_fastai.data.synthetic import write_scenes, write_large_scene

def naive(src, dst, size=512, tile=128):
    "The reference notebooks' loop: one scene at a time, Pillow throughout"
    for kind, sub in (('images', 'sat'), ('masks', 'map')):
        for d in ('png', 'resized', 'tiles'): (dst/d/kind).mkdir(parents=True, exist_ok=True)
    for ip in sorted((src/'sat').iterdir()):
        for kind, p in (('images', ip), ('masks', src/'map'/ip.name)):
            im = Image.open(p)
            if kind == 'masks': im = im.point(lambda v: 1 if v == 255 else 0)
            im.save(dst/'png'/kind/f'{ip.stem}.png')
            im = im.resize((size, size), Image.Resampling.NEAREST if kind == 'masks' else Image.Resampling.LANCZOS)
            im.save(dst/'resized'/kind/f'{ip.stem}.png')
            for y in range(0, size, tile):
                for x in range(0, size, tile):
                    im.crop((x, y, x + tile, y + tile)).save(dst/'tiles'/kind/f'{ip.stem}_y{y:05d}_x{x:05d}.png')

TO_PNG = ("import sys, pathlib, pyvips\nfor f in sorted(pathlib.Path(sys.argv[1]).glob('*/*.tif')):\n"
          "    pyvips.Image.new_from_file(str(f), access='sequential').pngsave(str(f.with_suffix('.png')), compression=1); f.unlink()")

def as_png(src:Path):
    """Every TIFF of `src`/{sat,map} converted to PNG by libvips (by strips: any size), the TIFF removed; in a process of
    its own, so that this one has not loaded libvips (its forked workers would then read with Pillow, see `raster.vips`)"""
    subprocess.run([sys.executable, '-c', TO_PNG, str(src)], check=True)

def same_pixels(a, b):
    fa, fb = sorted(p.relative_to(a) for p in a.rglob('*.png')), sorted(p.relative_to(b) for p in b.rglob('*.png'))
    tol = lambda f: 1 if 'images' in f.parts else 0
    return fa == fb and all(np.abs(np.asarray(Image.open(a/f)).astype(int) - np.asarray(Image.open(b/f))).max() <= tol(f) for f in fa), len(fa)

PEAK = ("import re, sys, time; from unet_fastai.data.prepare import prepare; t = time.perf_counter(); "
        "prepare(sys.argv[1], sys.argv[2], workers=0, progress=False); "
        "print(time.perf_counter() - t, int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]) * 1024)")

def big(root, size, fmt='tif'):
    "Time and peak RSS of preparing one size x size scene, and of a 600 x 600 one (the process itself)"
    print(f"\nmemory: one RGB {'GeoTIFF' if fmt == 'tif' else 'PNG'} scene + mask, default --size 512, tiles of 128, one process (peak RSS = VmHWM)")
    for s in (600, size):
        write_large_scene(root/f'big{s}', s, s)
        if fmt == 'png': as_png(root/f'big{s}')
        r = subprocess.run([sys.executable, '-c', PEAK, str(root/f'big{s}'), str(root/f'big{s}_out')], capture_output=True, text=True)
        if r.returncode: print(f"{s:>6} x {s:<6}: failed: {r.stderr.strip().splitlines()[-1][:300]}"); continue
        t, peak = map(float, r.stdout.split())
        print(f"{s:>6} x {s:<6}: {t:7.1f} s   peak RSS {peak / 1e9:5.2f} GB   ({peak / s / s:6.2f} B per scene pixel)")
        shutil.rmtree(root/f'big{s}'); shutil.rmtree(root/f'big{s}_out')

def main(scenes=8, rounds=3, workers=None, big_size=20000, fmt='tif'):
    root = Path(tempfile.mkdtemp(prefix='bench_prep_'))
    try:
        src = root/'src'
        write_scenes(src, n=scenes, size=1500)
        if fmt == 'png': as_png(src)
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
        print(f"scenes: {scenes} x 1500x1500 RGB {fmt.upper()} + mask, {rounds} rounds alternating, {n} PNG files each")
        print(f"naive loop (1 process, Pillow): {nv:8.1f} ms/scene   runs: {[round(t) for t in times['naive']]}")
        print(f"unet_fastai prepare           : {pr:8.1f} ms/scene   runs: {[round(t) for t in times['prepare']]}")
        print(f"speed-up prepare / naive      : {nv / pr:8.2f}x   (target >= 1.8x on 2 cores)")
        print(f"same pixels in every output   : {ok}")
        if not ok: raise SystemExit('outputs differ')
        if big_size: big(root, big_size, fmt)
    finally: shutil.rmtree(root, ignore_errors=True)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--scenes', type=int, default=8); ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--workers', type=int, default=None)
    ap.add_argument('--big', dest='big_size', type=int, default=20000, help='side of the large scene (0: none)')
    ap.add_argument('--format', dest='fmt', choices=('tif', 'png'), default='tif', help='the scenes as GeoTIFFs or as PNGs')
    main(**vars(ap.parse_args()))
